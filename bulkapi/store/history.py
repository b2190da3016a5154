"""Per-resource history: a row per applied version, written with the version itself.

Each write path records its versions in the transaction that makes them, so the
history of a key has no gap: versions 1..n, each with the write that made it. Only the
newest ``keep`` versions of a key are kept; older ones are deleted as new ones come.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from bulkapi.core.keys import ResourceKey
from bulkapi.core.plan import Applied
from bulkapi.store.database import Cte, as_utc, driver_cursor, sqlite_timestamp
from bulkapi.store.tables import resource_history, resources

#: A drain batch's versions, as CTEs of its one write statement (``store/drain.py``):
#: ``noted`` adds them, ``pruned`` lets go of the older rows that fall out of each key's
#: newest ``keep``. The two do not see each other's rows (one statement, one snapshot),
#: so versions of the batch that fall out at once are never added. Each returns a row
#: per row it wrote, so the statement can make them run before it locks resource rows.
_PG_NOTED = """
noted AS (
    INSERT INTO resource_history (tenant_id, type, rid, version, op, job_id, idx, applied_at)
    SELECT h.tenant_id, h.type, h.rid, h.version, h.op, h.job_id, h.idx, %(now)s
    FROM unnest(%(h_tenants)b::varchar[], %(h_types)b::varchar[], %(h_rids)b::varchar[],
                %(h_versions)b::integer[], %(h_ops)b::varchar[], %(h_job_ids)b::varchar[],
                %(h_idxs)b::integer[])
      AS h(tenant_id, type, rid, version, op, job_id, idx)
    RETURNING 1
)"""
_PG_PRUNED = """
pruned AS (
    DELETE FROM resource_history AS h
    USING unnest(%(p_tenants)b::varchar[], %(p_types)b::varchar[], %(p_rids)b::varchar[],
                 %(p_oldest)b::integer[]) AS k(tenant_id, type, rid, oldest)
    WHERE h.tenant_id = k.tenant_id AND h.type = k.type AND h.rid = k.rid
      AND h.version < k.oldest
    RETURNING 1
)"""


def _newest(entries: Sequence[Applied]) -> dict[tuple[str, str, str], int]:
    newest: dict[tuple[str, str, str], int] = {}
    for entry in entries:
        newest[entry.key] = max(entry.version, newest.get(entry.key, 0))
    return newest


def history_ctes(entries: Sequence[Applied], keep: int) -> list[Cte]:
    """The CTEs that record ``entries`` on PostgreSQL, inside a
    statement that binds ``now``: none without entries, ``pruned`` only for keys that
    now hold more than ``keep`` versions."""
    newest = _newest(entries)
    entries = [e for e in entries if e.version > newest[e.key] - keep]
    if not entries:
        return []
    ctes = [
        Cte(
            "noted",
            _PG_NOTED,
            {
                "h_tenants": [e.key[0] for e in entries],
                "h_types": [e.key[1] for e in entries],
                "h_rids": [e.key[2] for e in entries],
                "h_versions": [e.version for e in entries],
                "h_ops": [e.kind.value for e in entries],
                "h_job_ids": [e.job_id for e in entries],
                "h_idxs": [e.index for e in entries],
            },
        )
    ]
    full = sorted((key, last - keep + 1) for key, last in newest.items() if last > keep)
    if full:
        ctes.append(
            Cte(
                "pruned",
                _PG_PRUNED,
                {
                    "p_tenants": [key[0] for key, _ in full],
                    "p_types": [key[1] for key, _ in full],
                    "p_rids": [key[2] for key, _ in full],
                    "p_oldest": [oldest for _, oldest in full],
                },
            )
        )
    return ctes


_SQLITE_INSERT = (
    "INSERT INTO resource_history (tenant_id, type, rid, version, op, job_id, idx, applied_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_PRUNE = (
    "DELETE FROM resource_history WHERE tenant_id = ? AND type = ? AND rid = ? AND version <= ?"
)


def record_history_sqlite(
    conn: Connection, entries: Sequence[Applied], now: datetime, keep: int
) -> None:
    """Add a history row per applied version; drop versions older than the newest
    ``keep`` of each key. Cached point statements on the raw sqlite3 cursor: SQLite runs
    in-process, so a statement per row costs less than SQLAlchemy's per-row parameter
    processing would."""
    if not entries:
        return
    cursor = driver_cursor(conn)
    stamp = sqlite_timestamp(conn, now)
    cursor.executemany(
        _SQLITE_INSERT,
        [(*e.key, e.version, e.kind.value, e.job_id, e.index, stamp) for e in entries],
    )
    cursor.executemany(
        _SQLITE_PRUNE,
        [
            (*key, newest - keep)
            for key, newest in sorted(_newest(entries).items())
            if newest > keep
        ],
    )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    version: int
    op: str
    job_id: str | None
    index: int | None
    applied_at: datetime


def history_of(
    conn: Connection, tenant_id: str, key: ResourceKey, limit: int, before: int | None
) -> list[HistoryEntry] | None:
    """A key's versions, newest first (``before``: the last version of the previous
    page); None when the key was never written."""
    r = resources
    written = conn.execute(
        select(r.c.version).where(
            r.c.tenant_id == tenant_id, r.c.type == key.type, r.c.rid == key.id
        )
    ).scalar()
    if not written:
        return None
    h = resource_history
    query = select(h.c.version, h.c.op, h.c.job_id, h.c.idx, h.c.applied_at).where(
        h.c.tenant_id == tenant_id, h.c.type == key.type, h.c.rid == key.id
    )
    if before is not None:
        query = query.where(and_(h.c.version < before))
    rows = conn.execute(query.order_by(h.c.version.desc()).limit(limit))
    return [
        HistoryEntry(row.version, row.op, row.job_id, row.idx, as_utc(row.applied_at))  # type: ignore[arg-type]
        for row in rows
    ]
