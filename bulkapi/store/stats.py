"""The numbers behind ``GET /metrics``: the backlog, open jobs and side effects, now.

Every query reads a partial index (pending operations, open jobs, pending effects) or a
short range of one (effects finished in the last minutes), so a reading costs in
proportion to the work waiting, not to the history kept. Finished jobs are not counted:
the purge removes them, so a count would fall for reasons that have nothing to do with
the service's health.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import BindParameter

from bulkapi.core.effects import EffectStatus
from bulkapi.core.jobs import OPEN_STATUSES
from bulkapi.core.operations import OpStatus
from bulkapi.store.database import as_utc, is_postgres
from bulkapi.store.tables import effects, jobs, operations


@dataclass(frozen=True, slots=True)
class Stats:
    pending_operations: int
    #: The largest backlog of one partition (a hot or stuck partition shows here).
    max_partition_pending: int
    partitions_with_pending: int
    #: When the job of the oldest pending operation was accepted; None if none is pending.
    oldest_pending_accepted_at: datetime | None
    #: Open jobs by status; every open status is present.
    open_jobs: dict[str, int]
    pending_effects: int
    #: The earliest ``next_attempt_at`` among pending effects; None if none is pending.
    earliest_effect_due_at: datetime | None
    #: Effects that gave up (``failed``) since the reading's ``failed_since``.
    failed_effects: int


def read_stats(
    conn: Connection, failed_since: datetime, statement_timeout: float | None = None
) -> Stats:
    """Read every gauge in one transaction (PostgreSQL: each statement cut off after
    ``statement_timeout`` seconds, so a scrape never keeps the database busy for long)."""
    if statement_timeout is not None and is_postgres(conn):
        milliseconds = max(1, round(statement_timeout * 1000))
        conn.execute(select(func.set_config("statement_timeout", str(milliseconds), True)))
    partitions = _pending_by_partition(conn)
    oldest_id = min((oldest for _, oldest in partitions), default=None)
    pending_effects, earliest_due = _pending_effects(conn)
    return Stats(
        pending_operations=sum(count for count, _ in partitions),
        max_partition_pending=max((count for count, _ in partitions), default=0),
        partitions_with_pending=len(partitions),
        oldest_pending_accepted_at=None if oldest_id is None else _accepted_at(conn, oldest_id),
        open_jobs=_open_jobs(conn),
        pending_effects=pending_effects,
        earliest_effect_due_at=earliest_due,
        failed_effects=_failed_effects(conn, failed_since),
    )


def _pending_by_partition(conn: Connection) -> list[tuple[int, int]]:
    """(pending count, lowest pending id) per partition with pending operations: one
    scan of ``ix_operations_pending_partition`` (partition, tenant_id, id)."""
    o = operations
    rows = conn.execute(
        select(func.count(), func.min(o.c.id))
        .where(o.c.status == OpStatus.PENDING.value)
        .group_by(o.c.partition)
    ).all()
    return [(int(count), int(oldest)) for count, oldest in rows]


def _accepted_at(conn: Connection, operation_id: int) -> datetime | None:
    """When the operation's job was accepted (operations have no time of their own;
    the lowest pending id belongs to the longest-waiting admission)."""
    accepted = conn.execute(
        select(jobs.c.created_at)
        .select_from(operations.join(jobs, jobs.c.id == operations.c.job_id))
        .where(operations.c.id == operation_id)
    ).scalar_one_or_none()
    return as_utc(accepted)


def _open_jobs(conn: Connection) -> dict[str, int]:
    # Literal values: SQLite uses the partial index ix_jobs_open only when it can see
    # them, and bound parameters hide them.
    statuses: BindParameter[str] = bindparam(
        "open", list(OPEN_STATUSES), expanding=True, literal_execute=True
    )
    counts = dict.fromkeys(OPEN_STATUSES, 0)
    rows = conn.execute(
        select(jobs.c.status, func.count())
        .where(jobs.c.status.in_(statuses))
        .group_by(jobs.c.status)
    )
    for status, count in rows:
        counts[status] = int(count)
    return counts


def _pending_effects(conn: Connection) -> tuple[int, datetime | None]:
    """Count and earliest due time of pending effects: the rows of the partial index
    ``ix_effects_pending_resource``, linear in the effects waiting."""
    e = effects
    count, earliest = conn.execute(
        select(func.count(), func.min(e.c.next_attempt_at)).where(
            e.c.status == EffectStatus.PENDING.value
        )
    ).one()
    return int(count), as_utc(earliest)


def _failed_effects(conn: Connection, since: datetime) -> int:
    """Effects that gave up since ``since``: a range of ``ix_effects_finished_at`` (there
    is no index on failed effects, and counting them all would read the whole table)."""
    e = effects
    return int(
        conn.execute(
            select(func.count()).where(
                e.c.finished_at >= since, e.c.status == EffectStatus.FAILED.value
            )
        ).scalar_one()
    )
