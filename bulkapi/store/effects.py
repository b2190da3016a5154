"""The side-effect outbox: recording effects with their change, reading and purging them.

An effect row is written in the transaction that applies its change, so a committed
change always has its effects recorded and a rolled-back one never does. Running them,
in order per resource, is ``store/effect_runs.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, delete, exists, insert, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Exists

from bulkapi.core.effects import EffectStatus
from bulkapi.core.keys import ResourceKey
from bulkapi.core.plan import AppliedChange
from bulkapi.store.database import Cte, as_utc
from bulkapi.store.tables import effects

_PENDING = EffectStatus.PENDING.value


def effect_values(changes: Iterable[AppliedChange], now: datetime) -> list[dict[str, Any]]:
    """One pending outbox row per effect a change triggered, in its declared order."""
    return [
        {
            "tenant_id": change.tenant_id,
            "type": change.key.type,
            "rid": change.key.id,
            "version": change.version,
            "position": position,
            "name": name,
            "partition": change.partition,
            "operation_id": change.operation_id,
            "job_id": change.job_id,
            "idx": change.index,
            "op": change.kind.value,
            "before": change.before,
            "after": change.after,
            "status": _PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for change in changes
        for position, name in enumerate(change.effects)
    ]


_PG_INSERT = """
INSERT INTO effects (tenant_id, type, rid, version, position, name, partition, operation_id,
                     job_id, idx, op, before, after, status, attempts, next_attempt_at,
                     created_at)
SELECT e.tenant_id, e.type, e.rid, e.version, e.position, e.name, e.partition,
       e.operation_id, e.job_id, e.idx, e.op, e.before, e.after, 'pending', 0, %(now)s,
       %(now)s
FROM unnest(%(tenant_id)b::varchar[], %(type)b::varchar[], %(rid)b::varchar[],
            %(version)b::integer[], %(position)b::smallint[], %(name)b::varchar[],
            %(partition)b::smallint[], %(operation_id)b::varchar[], %(job_id)b::varchar[],
            %(idx)b::integer[], %(op)b::varchar[], %(before)b::text[]::jsonb[],
            %(after)b::text[]::jsonb[])
  AS e(tenant_id, type, rid, version, position, name, partition, operation_id, job_id, idx,
       op, before, after)
"""
_PG_COLUMNS = (
    "tenant_id",
    "type",
    "rid",
    "version",
    "position",
    "name",
    "partition",
    "operation_id",
    "job_id",
    "idx",
    "op",
)


def _pg_arrays(changes: Iterable[AppliedChange], now: datetime) -> dict[str, Any]:
    rows = effect_values(changes, now)
    arrays: dict[str, Any] = {column: [row[column] for row in rows] for column in _PG_COLUMNS}
    for column in ("before", "after"):
        arrays[column] = [
            None if row[column] is None else orjson.dumps(row[column]).decode() for row in rows
        ]
    return arrays


def insert_effects(cursor: Any, changes: Iterable[AppliedChange], now: datetime) -> None:
    """``record_effects`` on a raw psycopg cursor, as one array statement, so it can go
    with the rest of a write on its own cursor."""
    cursor.execute(_PG_INSERT, {"now": now, **_pg_arrays(changes, now)})


def effects_cte(changes: Iterable[AppliedChange], now: datetime) -> Cte:
    """``record_effects`` as a CTE (``effected``, a row per effect) of a larger statement
    that binds ``now``."""
    return Cte("effected", f"effected AS ({_PG_INSERT} RETURNING 1)", _pg_arrays(changes, now))


def record_effects(conn: Connection, changes: Iterable[AppliedChange], now: datetime) -> int:
    """Insert one pending row per triggered effect; returns how many."""
    rows = effect_values(changes, now)
    if rows:
        conn.execute(insert(effects), rows)
    return len(rows)


@dataclass(frozen=True, slots=True)
class EffectRecord:
    name: str
    version: int
    position: int
    operation_id: str
    job_id: str | None
    index: int | None
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


_RECORD_COLUMNS = (
    effects.c.name,
    effects.c.version,
    effects.c.position,
    effects.c.operation_id,
    effects.c.job_id,
    effects.c.idx,
    effects.c.status,
    effects.c.attempts,
    effects.c.last_error,
    effects.c.created_at,
    effects.c.finished_at,
)


def _record(row: Any) -> EffectRecord:
    return EffectRecord(
        row.name,
        row.version,
        row.position,
        row.operation_id,
        row.job_id,
        row.idx,
        row.status,
        row.attempts,
        row.last_error,
        as_utc(row.created_at),  # type: ignore[arg-type]
        None if row.finished_at is None else as_utc(row.finished_at),
    )


def effects_of_operations(
    conn: Connection, job_id: str, indexes: Sequence[int]
) -> dict[int, list[EffectRecord]]:
    """The effects of some of a job's operations, by operation index.

    A page of unfiltered results is a run of consecutive indexes: one range scan. A
    filtered page may be scattered over the whole job, and a range would then read the
    effects of every operation between them, so it names its indexes instead.
    """
    if not indexes:
        return {}
    e = effects
    low, high = min(indexes), max(indexes)
    wanted = e.c.idx.between(low, high) if high - low < 2 * len(indexes) else e.c.idx.in_(indexes)
    rows = conn.execute(
        select(*_RECORD_COLUMNS).where(e.c.job_id == job_id, wanted).order_by(e.c.idx, e.c.position)
    )
    found: dict[int, list[EffectRecord]] = {}
    for row in rows:
        found.setdefault(row.idx, []).append(_record(row))
    return found


def effects_summary_is(job_id: Any, index: Any, summary: str) -> ColumnElement[bool]:
    """SQL for "the operation (``job_id``, ``index``) has this effects summary", the same
    rule as ``core.effects.summary_status``: failed if any failed, else pending if any is
    pending, else succeeded."""

    def having(*conditions: ColumnElement[bool]) -> Exists:
        return exists().where(effects.c.job_id == job_id, effects.c.idx == index, *conditions)

    failed = having(effects.c.status == EffectStatus.FAILED.value)
    pending = having(effects.c.status == _PENDING)
    if summary == EffectStatus.FAILED.value:
        return failed
    if summary == EffectStatus.PENDING.value:
        return and_(pending, ~failed)
    return and_(having(), ~failed, ~pending)


def effects_of_resource(
    conn: Connection,
    tenant_id: str,
    key: ResourceKey,
    limit: int,
    after: tuple[int, int] | None,
) -> list[EffectRecord]:
    """A resource's effects, newest change first; ``after`` is the last (version,
    position) of the previous page."""
    e = effects
    query = select(*_RECORD_COLUMNS).where(
        e.c.tenant_id == tenant_id, e.c.type == key.type, e.c.rid == key.id
    )
    if after is not None:
        version, position = after
        query = query.where(
            or_(e.c.version < version, and_(e.c.version == version, e.c.position > position))
        )
    rows = conn.execute(query.order_by(e.c.version.desc(), e.c.position).limit(limit))
    return [_record(row) for row in rows]


def effects_of_versions(
    conn: Connection, tenant_id: str, key: ResourceKey, versions: Sequence[int]
) -> dict[int, list[EffectRecord]]:
    """The effects some versions of a resource triggered, by version, in run order."""
    if not versions:
        return {}
    e = effects
    rows = conn.execute(
        select(*_RECORD_COLUMNS)
        .where(
            e.c.tenant_id == tenant_id,
            e.c.type == key.type,
            e.c.rid == key.id,
            e.c.version.between(min(versions), max(versions)),
        )
        .order_by(e.c.version, e.c.position)
    )
    found: dict[int, list[EffectRecord]] = {}
    for row in rows:
        found.setdefault(row.version, []).append(_record(row))
    return found


def purge_finished_effects(conn: Connection, finished_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` effects that ended before the cutoff (pending ones stay,
    whatever became of their job)."""
    e = effects
    expired = (
        select(e.c.id)
        .where(e.c.finished_at < finished_before)
        .order_by(e.c.finished_at)
        .limit(limit)
        .scalar_subquery()
    )
    return conn.execute(delete(e).where(e.c.id.in_(expired))).rowcount
