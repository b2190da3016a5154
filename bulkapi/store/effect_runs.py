"""Running the side-effect outbox: which effects may run now, claims, outcomes.

Rows of one resource are run strictly one after another in (version, position) order: an
effect is eligible only while every earlier pending effect of its resource is due as
well, and a runner calls them in that order and stops at a failure. So a failing effect
holds back the later effects of its resource (and only of its resource) until it
succeeds or gives up. A claimed effect is leased (not due) until its attempt reports back
or the lease lapses, so it holds back its resource's later effects meanwhile too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, bindparam, exists, func, literal, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Select

from bulkapi.core.effects import EffectStatus
from bulkapi.store.database import driver_cursor, is_postgres, probes_only
from bulkapi.store.tables import effects

_PENDING = EffectStatus.PENDING.value


@dataclass(frozen=True, slots=True)
class PendingEffect:
    id: int
    tenant_id: str
    type: str
    rid: str
    version: int
    name: str
    operation_id: str
    job_id: str | None
    op: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    attempts: int

    @property
    def resource(self) -> tuple[str, str, str]:
        return (self.tenant_id, self.type, self.rid)


def _pending() -> ColumnElement[bool]:
    """``status = 'pending'`` with the value written into the SQL: a partial index is used
    only where the planner sees the value (SQLite never looks into a bound parameter, nor
    does a generic PostgreSQL plan)."""
    return effects.c.status == literal(_PENDING, literal_execute=True)


def _in_resource_order(*where: ColumnElement[bool]) -> Select[Any]:
    """Pending effects, each with its place in its resource's (version, position) order
    (``rank``, 1 = the resource's earliest pending effect) and the latest
    ``next_attempt_at`` up to it (``latest``). An effect may run when ``latest <= now``:
    it and every earlier pending effect of its resource are due.

    One ordered scan of ``ix_effects_pending_resource`` (``next_attempt_at`` read from
    each row it finds), however many effects a resource has waiting: the cost is linear
    in the pending effects read.
    """
    e = effects
    window: dict[str, Any] = {
        "partition_by": (e.c.partition, e.c.tenant_id, e.c.type, e.c.rid),
        "order_by": (e.c.version, e.c.position),
        "rows": (None, 0),
    }
    return select(
        e.c.id,
        e.c.partition,
        e.c.next_attempt_at,
        func.row_number().over(**window).label("rank"),
        func.max(e.c.next_attempt_at).over(**window).label("latest"),
    ).where(_pending(), *where)


def due_effects(conn: Connection, partition: int, now: datetime, limit: int) -> list[PendingEffect]:
    """Up to ``limit`` of the partition's effects that may run now, in the order to run
    them.

    Per resource: its earliest pending effects, as long as they are due. The run stops at
    the first one that is not (waiting for a retry, or claimed by a pass in flight), so
    later effects never overtake it. Every resource's first effect comes before any
    resource's second, and so on: a resource with a long backlog shares a pass with the
    others instead of filling it.
    """
    ranked = _in_resource_order(effects.c.partition == partition).subquery("in_order")
    chosen = (
        select(ranked.c.id, ranked.c.rank, ranked.c.next_attempt_at)
        .where(ranked.c.latest <= now)
        .order_by(ranked.c.rank, ranked.c.next_attempt_at, ranked.c.id)
        .limit(limit)
        .subquery("chosen")
    )
    e = effects
    rows = conn.execute(
        select(
            e.c.id,
            e.c.tenant_id,
            e.c.type,
            e.c.rid,
            e.c.version,
            e.c.name,
            e.c.operation_id,
            e.c.job_id,
            e.c.op,
            e.c.before,
            e.c.after,
            e.c.attempts,
        )
        .join_from(chosen, e, e.c.id == chosen.c.id)
        .order_by(chosen.c.rank, chosen.c.next_attempt_at, chosen.c.id)
    ).all()
    return [PendingEffect(**row._asdict()) for row in rows]


def due_partitions(conn: Connection, now: datetime) -> list[int]:
    """Partitions where some resource's earliest pending effect is due. Effects waiting
    behind one that waits for a retry do not count: waking for them would find nothing.

    Partition by partition, so each check can stop at the first resource found due
    instead of ranking every pending effect: the partitions with pending effects are
    found by stepping through the index (each step the next partition number, a
    recursive query), then each is checked with ``EXISTS``.
    """
    e = effects
    first = select(func.min(e.c.partition)).where(_pending()).scalar_subquery()
    partitions = select(first.label("partition")).cte("partitions", recursive=True)
    following = (
        select(func.min(e.c.partition))
        .where(_pending(), e.c.partition > partitions.c.partition)
        .scalar_subquery()
    )
    partitions = partitions.union_all(select(following).where(partitions.c.partition.is_not(None)))
    ranked = (
        _in_resource_order(e.c.partition == partitions.c.partition)
        .correlate(partitions)
        .subquery("in_order")
    )
    has_due_head = exists().where(ranked.c.rank == 1, ranked.c.latest <= now)
    return list(
        conn.execute(
            select(partitions.c.partition).where(partitions.c.partition.is_not(None), has_due_head)
        ).scalars()
    )


@dataclass(frozen=True, slots=True)
class Claim:
    effect_id: int
    #: No other runner takes the effect, or a later effect of its resource, before this
    #: (unless the attempt reports back first).
    leased_until: datetime


_PG_CLAIM = """
UPDATE effects AS e
SET attempts = e.attempts + 1, next_attempt_at = c.leased_until
FROM unnest(%(ids)b::bigint[], %(until)b::timestamptz[]) AS c(id, leased_until)
WHERE e.id = c.id
"""


def claim_attempts(conn: Connection, claims: Sequence[Claim]) -> None:
    """Count attempts before making them and lease the effects: a worker that dies, or
    loses its runner lock, mid-handler has still used the attempt, and nobody else runs
    the effect or its resource's later effects while that worker may still call them.
    On PostgreSQL one array statement for the pass, not one statement per effect, and
    each row updated in place (HOT): the columns it sets are in no index."""
    if not claims:
        return
    if is_postgres(conn):
        cursor = driver_cursor(conn)
        probes_only(cursor)  # else a hash join over the whole outbox, growing with it
        cursor.execute(
            _PG_CLAIM,
            {"ids": [c.effect_id for c in claims], "until": [c.leased_until for c in claims]},
        )
        return
    conn.execute(
        update(effects)
        .where(effects.c.id == bindparam("effect_id"))
        .values(attempts=effects.c.attempts + 1, next_attempt_at=bindparam("leased_until")),
        [{"effect_id": c.effect_id, "leased_until": c.leased_until} for c in claims],
    )


def release_claims(conn: Connection, effect_ids: Sequence[int], now: datetime) -> None:
    """Give back attempts claimed but not made (the run's time was up, or an earlier
    effect of the resource failed in the same pass): due at once."""
    if effect_ids:
        conn.execute(
            update(effects)
            .where(effects.c.id.in_(effect_ids))
            .values(attempts=effects.c.attempts - 1, next_attempt_at=now)
        )


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    effect_id: int
    #: PENDING: failed, to be retried at ``retry_at``.
    status: EffectStatus
    error: str | None
    retry_at: datetime | None = None


_PG_OUTCOMES = """
UPDATE effects AS e
SET status = o.status,
    last_error = coalesce(o.error, e.last_error),
    next_attempt_at = coalesce(o.retry_at, e.next_attempt_at),
    finished_at = o.ended_at
FROM unnest(%(ids)b::bigint[], %(statuses)b::varchar[], %(errors)s::text[],
            %(retry_ats)s::timestamptz[], %(ended)s::timestamptz[])
  AS o(id, status, error, retry_at, ended_at)
WHERE e.id = o.id
"""


def record_outcomes(conn: Connection, outcomes: Sequence[AttemptOutcome], now: datetime) -> None:
    """Record how attempts ended; a success keeps the error of any attempt before it.
    On PostgreSQL one array statement for the pass."""
    if not outcomes:
        return
    ended = [None if o.status is EffectStatus.PENDING else now for o in outcomes]
    if is_postgres(conn):
        # The arrays that may hold only NULLs go as text (%s): a binary array needs an
        # element type, which a list of None does not tell.
        cursor = driver_cursor(conn)
        probes_only(cursor)
        cursor.execute(
            _PG_OUTCOMES,
            {
                "ids": [o.effect_id for o in outcomes],
                "statuses": [o.status.value for o in outcomes],
                "errors": [o.error for o in outcomes],
                "retry_ats": [o.retry_at for o in outcomes],
                "ended": ended,
            },
        )
        return
    e = effects
    conn.execute(
        update(e)
        .where(e.c.id == bindparam("effect_id"))
        .values(
            status=bindparam("new_status"),
            last_error=func.coalesce(bindparam("error", type_=Text), e.c.last_error),
            next_attempt_at=func.coalesce(
                bindparam("retry_at", type_=e.c.next_attempt_at.type), e.c.next_attempt_at
            ),
            finished_at=bindparam("ended_at", type_=e.c.finished_at.type),
        ),
        [
            {
                "effect_id": o.effect_id,
                "new_status": o.status.value,
                "error": o.error,
                "retry_at": o.retry_at,
                "ended_at": ended_at,
            }
            for o, ended_at in zip(outcomes, ended, strict=True)
        ],
    )
