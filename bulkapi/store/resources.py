"""Single-resource reads and synchronous writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from bulkapi.core.apply import ResourceState
from bulkapi.core.errors import NotFound
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import OpStatus
from bulkapi.core.plan import Applied, AppliedChange
from bulkapi.core.preconditions import ANY_VERSION, Preconditions
from bulkapi.store.database import as_utc, dialect_insert, driver_cursor, is_postgres
from bulkapi.store.effects import insert_effects, record_effects
from bulkapi.store.history import record_history_sqlite
from bulkapi.store.tables import operations, resources


@dataclass(frozen=True, slots=True)
class StoredResource:
    type: str
    id: str
    version: int
    data: dict[str, Any] | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WriteResult:
    resource: StoredResource
    created: bool
    #: Side effects the write recorded (to be run after commit).
    effects: int = 0


def _where_key(tenant_id: str, key: ResourceKey) -> tuple[Any, ...]:
    r = resources
    return (r.c.tenant_id == tenant_id, r.c.type == key.type, r.c.rid == key.id)


def get_resource(conn: Connection, tenant_id: str, key: ResourceKey) -> StoredResource:
    r = resources
    row = conn.execute(
        select(r.c.version, r.c.data, r.c.updated_at).where(
            *_where_key(tenant_id, key), r.c.data.is_not(None)
        )
    ).first()
    if row is None:
        raise NotFound(f"No resource {key.type}/{key.id}.")
    return StoredResource(key.type, key.id, row.version, row.data, as_utc(row.updated_at))  # type: ignore[arg-type]


def list_resources(
    conn: Connection, tenant_id: str, rtype: str, limit: int, after: str | None
) -> list[StoredResource]:
    r = resources
    query = select(r.c.rid, r.c.version, r.c.data, r.c.updated_at).where(
        r.c.tenant_id == tenant_id, r.c.type == rtype, r.c.data.is_not(None)
    )
    if after is not None:
        query = query.where(r.c.rid > after)
    rows = conn.execute(query.order_by(r.c.rid).limit(limit))
    return [
        StoredResource(rtype, row.rid, row.version, row.data, as_utc(row.updated_at))  # type: ignore[arg-type]
        for row in rows
    ]


def oldest_pending_job(conn: Connection, tenant_id: str, key: ResourceKey) -> str | None:
    o = operations
    return conn.execute(
        select(o.c.job_id)
        .where(
            o.c.tenant_id == tenant_id,
            o.c.type == key.type,
            o.c.rid == key.id,
            o.c.status == OpStatus.PENDING.value,
        )
        .order_by(o.c.seq)
        .limit(1)
    ).scalar()


@dataclass(frozen=True, slots=True)
class Locked:
    """A key's row, locked for a sync write: its state and its unfinished bulk work."""

    state: ResourceState
    pending: int


_PG_LOCK_OR_CREATE = """
INSERT INTO resources AS r (tenant_id, type, rid, version, admitted_seq, created_at,
                            updated_at)
VALUES (%(tenant)s, %(type)s, %(rid)s, 0, 0, %(now)s, %(now)s)
ON CONFLICT (tenant_id, type, rid) DO UPDATE SET pending = r.pending
RETURNING version, data, pending
"""
_PG_LOCK = """
SELECT version, data, pending FROM resources
WHERE tenant_id = %(tenant)s AND type = %(type)s AND rid = %(rid)s
FOR UPDATE
"""
#: A sync write's new state, its history line and the oldest line let go: one statement.
_PG_WRITE = """
WITH written AS (
    UPDATE resources
    SET version = %(version)s, data = %(data)s::jsonb, updated_at = %(now)s,
        created_at = CASE WHEN %(created)s THEN %(now)s ELSE created_at END
    WHERE tenant_id = %(tenant)s AND type = %(type)s AND rid = %(rid)s
    RETURNING version
),
noted AS (
    INSERT INTO resource_history (tenant_id, type, rid, version, op, job_id, idx, applied_at)
    SELECT %(tenant)s, %(type)s, %(rid)s, version, %(op)s, NULL, NULL, %(now)s FROM written
)
DELETE FROM resource_history AS h
USING written
WHERE h.tenant_id = %(tenant)s AND h.type = %(type)s AND h.rid = %(rid)s
  AND h.version <= written.version - %(keep)s
"""


def lock_for_write(
    conn: Connection, tenant_id: str, key: ResourceKey, now: datetime, *, create: bool
) -> Locked | None:
    """Lock the key's row (creating an absent placeholder first when ``create``); None
    when there is no row and none was to be created.

    The row lock is what admissions take to count a key's pending work, so while it is
    held no bulk operation can be admitted for the key, and ``pending`` is exact.
    """
    if is_postgres(conn):
        row = _pg_one(
            conn,
            _PG_LOCK_OR_CREATE if create else _PG_LOCK,
            {"tenant": tenant_id, "type": key.type, "rid": key.id, "now": now},
        )
        return None if row is None else Locked(ResourceState(row[0], row[1]), row[2])
    r = resources
    if create:
        conn.execute(
            dialect_insert(conn, r)
            .values(
                tenant_id=tenant_id,
                type=key.type,
                rid=key.id,
                version=0,
                admitted_seq=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
        )
    found = conn.execute(
        select(r.c.version, r.c.data, r.c.pending).where(*_where_key(tenant_id, key))
    ).first()
    if found is None:
        return None
    return Locked(ResourceState(found.version, found.data), found.pending)


def _pg_one(conn: Connection, statement: str, params: dict[str, Any]) -> Any:
    """The first row of a raw statement, on the transaction's own psycopg cursor."""
    cursor = driver_cursor(conn)
    cursor.execute(statement, params)
    return cursor.fetchone()


def write_state(
    conn: Connection,
    tenant_id: str,
    key: ResourceKey,
    *,
    state: ResourceState,
    created: bool,
    changes: list[AppliedChange],
    applied: Applied,
    now: datetime,
    keep_history: int,
) -> None:
    """Store a sync write's result, its effects and its history line on the locked row,
    and commit."""
    if not is_postgres(conn):
        values: dict[str, Any] = {"version": state.version, "data": state.data, "updated_at": now}
        if created:
            values["created_at"] = now
        conn.execute(update(resources).where(*_where_key(tenant_id, key)).values(**values))
        record_effects(conn, changes, now)
        record_history_sqlite(conn, [applied], now, keep_history)
        return
    driver = conn.connection.driver_connection
    cursor = driver.cursor()  # type: ignore[union-attr]
    cursor.execute(
        _PG_WRITE,
        {
            "tenant": tenant_id,
            "type": key.type,
            "rid": key.id,
            "version": state.version,
            "data": None if state.data is None else orjson.dumps(state.data).decode(),
            "created": created,
            "now": now,
            "op": applied.kind.value,
            "keep": keep_history,
        },
    )
    if changes:
        insert_effects(cursor, changes, now)
    driver.commit()  # type: ignore[union-attr]


#: A blind upsert (no rules, no effects) on PostgreSQL: lock-or-create, pending check,
#: preconditions and write in one statement. ``created_at`` is set whenever the write
#: brings the resource into existence, which is how the answer tells 201 from 200.
_BLIND_UPSERT = """
INSERT INTO resources AS r (tenant_id, type, rid, version, admitted_seq, data, created_at,
                            updated_at)
VALUES (%(tenant)s, %(type)s, %(rid)s, 1, 0, %(data)s::jsonb, %(now)s, clock_timestamp())
ON CONFLICT (tenant_id, type, rid) DO UPDATE
SET version = r.version + 1, data = excluded.data, updated_at = clock_timestamp(),
    created_at = CASE WHEN r.data IS NULL THEN excluded.created_at ELSE r.created_at END
WHERE r.pending = 0 AND (NOT %(only_new)s OR r.data IS NULL)
RETURNING r.version, r.created_at = %(now)s AS created, r.updated_at
"""
#: The same for a replacement under ``If-Match``: the resource must exist.
_BLIND_REPLACE = """
UPDATE resources AS r
SET version = r.version + 1, data = %(data)s::jsonb, updated_at = clock_timestamp()
WHERE r.tenant_id = %(tenant)s AND r.type = %(type)s AND r.rid = %(rid)s
  AND r.pending = 0 AND r.data IS NOT NULL
  AND (%(versions)s::integer[] IS NULL OR r.version = ANY(%(versions)s::integer[]))
RETURNING r.version, false AS created, r.updated_at
"""
#: Either of them, with the version's history line (and the oldest line let go) in the
#: same statement. Times are taken once the row is locked (``clock_timestamp()``), so a
#: key's versions are stamped in the order they were made.
_BLIND_WITH_HISTORY = """
WITH written AS ({write}),
noted AS (
    INSERT INTO resource_history (tenant_id, type, rid, version, op, job_id, idx, applied_at)
    SELECT %(tenant)s, %(type)s, %(rid)s, version, 'upsert', NULL, NULL, updated_at
    FROM written
),
pruned AS (
    DELETE FROM resource_history AS h
    USING written
    WHERE h.tenant_id = %(tenant)s AND h.type = %(type)s AND h.rid = %(rid)s
      AND h.version <= written.version - %(keep)s
)
SELECT version, created, updated_at FROM written
"""
_BLIND_UPSERT_NOTED = _BLIND_WITH_HISTORY.format(write=_BLIND_UPSERT)
_BLIND_REPLACE_NOTED = _BLIND_WITH_HISTORY.format(write=_BLIND_REPLACE)


def write_blind(
    conn: Connection,
    tenant_id: str,
    key: ResourceKey,
    *,
    data: dict[str, Any],
    preconditions: Preconditions,
    now: datetime,
    keep_history: int,
) -> tuple[int, bool, datetime] | None:
    """Try an upsert whose outcome needs no read (PostgreSQL only): one statement in a
    transaction of its own, one round trip. The new version, whether it created the
    resource and when it was written; or None when the key is busy or a precondition does
    not hold: then nothing was written, and the caller reads the row, in a transaction,
    to say why."""
    if_match = preconditions.if_match
    params: dict[str, Any] = {
        "tenant": tenant_id,
        "type": key.type,
        "rid": key.id,
        "data": orjson.dumps(data).decode(),
        "now": now,
        "only_new": preconditions.if_none_match,
        "versions": None if if_match is None or if_match == ANY_VERSION else sorted(if_match),
        "keep": keep_history,
    }
    statement = _BLIND_UPSERT_NOTED if if_match is None else _BLIND_REPLACE_NOTED
    driver = conn.connection.driver_connection
    # One statement, its own transaction: no BEGIN or COMMIT to wait for.
    driver.autocommit = True  # type: ignore[union-attr]
    try:
        row = driver.execute(statement, params).fetchone()  # type: ignore[union-attr]
    finally:
        driver.autocommit = False  # type: ignore[union-attr]
    if row is None:
        return None
    return int(row[0]), bool(row[1]), row[2]
