"""Reading jobs and moving them through their states."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, any_, bindparam, delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from bulkapi.core.errors import JobFinished, NotFound
from bulkapi.core.jobs import OPEN_STATUSES, Counts, JobStatus, terminal_status
from bulkapi.core.operations import OpStatus
from bulkapi.store.database import as_utc, dialect_insert, driver_cursor, is_postgres
from bulkapi.store.effects import EffectRecord, effects_of_operations, effects_summary_is
from bulkapi.store.tables import (
    job_counts,
    job_status_history,
    jobs,
    operations,
    resources,
    status_tokens,
)
from bulkapi.store.webhooks import purge_deliveries, record_deliveries


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: Counts
    history: list[tuple[JobStatus, datetime]]
    callback_url: str | None
    metadata: dict[str, Any] | None
    deadline: datetime | None = None
    #: The job this one retries, and this job's own retries, oldest first.
    retry_of: str | None = None
    retried_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResultRecord:
    index: int
    op: str
    type: str
    id: str
    status: str
    version: int | None
    error_code: str | None
    error_message: str | None
    #: Side effects the operation triggered, in the order they run.
    effects: tuple[EffectRecord, ...] = ()


#: Results read per round trip (their effects come with each chunk).
_RESULTS_CHUNK = 1000


def _counts(conn: Connection, totals: dict[str, int]) -> dict[str, Counts]:
    c = job_counts
    sums = {
        row.job_id: row
        for row in conn.execute(
            select(
                c.c.job_id,
                func.sum(c.c.succeeded).label("succeeded"),
                func.sum(c.c.failed).label("failed"),
                func.sum(c.c.cancelled).label("cancelled"),
            )
            .where(c.c.job_id.in_(list(totals)))
            .group_by(c.c.job_id)
        )
    }
    result = {}
    for job_id, total in totals.items():
        row = sums.get(job_id)
        result[job_id] = (
            Counts(total)
            if row is None
            else Counts(total, int(row.succeeded), int(row.failed), int(row.cancelled))
        )
    return result


def _job_query() -> Select[Any]:
    """A job's row with everything its representation shows, in one statement: the
    counters' sums, the time of each status it entered and the ids of its retries ride
    along as correlated subqueries (index probes of the job's own rows), instead of a
    round trip each, on every status read and every look of a long poll."""
    c, h, retry = job_counts, job_status_history, jobs.alias("retry")
    sums = [
        select(func.coalesce(func.sum(column), 0))
        .where(c.c.job_id == jobs.c.id)
        .scalar_subquery()
        .label(column.name)
        for column in (c.c.succeeded, c.c.failed, c.c.cancelled)
    ]
    entered = [
        select(h.c.at)
        .where(h.c.job_id == jobs.c.id, h.c.status == status.value)
        .scalar_subquery()
        .label(f"at_{status.value}")
        for status in JobStatus
    ]
    retries = (
        select(func.aggregate_strings(retry.c.id, ","))
        .where(retry.c.retry_of == jobs.c.id)
        .scalar_subquery()
        .label("retries")
    )
    return select(
        jobs.c.id,
        jobs.c.status,
        jobs.c.total,
        jobs.c.created_at,
        jobs.c.started_at,
        jobs.c.finished_at,
        jobs.c.callback_url,
        jobs.c.meta,
        jobs.c.deadline,
        jobs.c.retry_of,
        *sums,
        *entered,
        retries,
    )


_JOB_QUERY = _job_query()
#: One statement object for every read of one job (SQLAlchemy derives a statement's cache
#: key from its whole tree on each run; a new ``where`` each time also built the tree).
_ONE_JOB = _JOB_QUERY.where(
    jobs.c.id == bindparam("job_id"), jobs.c.tenant_id == bindparam("tenant_id")
)


def _record(row: Any) -> JobRecord:
    history = [
        (status, as_utc(at))
        for status in JobStatus  # in STATUS_RANK order
        if (at := row._mapping[f"at_{status.value}"]) is not None
    ]
    return JobRecord(
        row.id,
        JobStatus(row.status),
        as_utc(row.created_at),  # type: ignore[arg-type]
        as_utc(row.started_at),
        as_utc(row.finished_at),
        Counts(row.total, int(row.succeeded), int(row.failed), int(row.cancelled)),
        history,  # type: ignore[arg-type]
        row.callback_url,
        row.meta,
        as_utc(row.deadline),
        row.retry_of,
        tuple(sorted(row.retries.split(","))) if row.retries else (),  # ids sort by age
    )


def get_job(conn: Connection, tenant_id: str, job_id: str) -> JobRecord:
    row = conn.execute(_ONE_JOB, {"job_id": job_id, "tenant_id": tenant_id}).first()
    if row is None:
        raise NotFound(f"No job {job_id}.")
    return _record(row)


def list_jobs(
    conn: Connection, tenant_id: str, status: str | None, limit: int, before: str | None
) -> list[JobRecord]:
    """Newest first; ids sort by creation time, so ``before`` is a keyset cursor."""
    query = _JOB_QUERY.where(jobs.c.tenant_id == tenant_id)
    if status is not None:
        query = query.where(jobs.c.status == status)
    if before is not None:
        query = query.where(jobs.c.id < before)
    return [_record(row) for row in conn.execute(query.order_by(jobs.c.id.desc()).limit(limit))]


@dataclass(frozen=True, slots=True)
class ResultFilter:
    #: An operation status (pending, succeeded, failed, cancelled), or None for all.
    status: str | None = None
    #: A summary of the operation's effects (``core.effects.summary_status``), or None.
    effects_status: str | None = None


def list_results(
    conn: Connection, job_id: str, wanted: ResultFilter, limit: int | None, after: int
) -> Iterable[ResultRecord]:
    o = operations
    query = (
        select(
            o.c.idx,
            o.c.op,
            o.c.type,
            o.c.rid,
            o.c.status,
            o.c.version,
            o.c.error_code,
            o.c.error_message,
        )
        .where(o.c.job_id == job_id, o.c.idx > after)
        .order_by(o.c.idx)
    )
    if wanted.status is not None:
        query = query.where(o.c.status == wanted.status)
    if wanted.effects_status is not None:
        query = query.where(effects_summary_is(o.c.job_id, o.c.idx, wanted.effects_status))
    if limit is not None:
        query = query.limit(limit)
    for chunk in conn.execute(query).partitions(_RESULTS_CHUNK):
        effects = effects_of_operations(conn, job_id, [row.idx for row in chunk])
        for row in chunk:
            yield ResultRecord(
                row.idx,
                row.op,
                row.type,
                row.rid,
                row.status,
                row.version,
                row.error_code,
                row.error_message,
                tuple(effects.get(row.idx, ())),
            )


@dataclass(frozen=True, slots=True)
class Settled:
    #: Jobs this settle moved to a terminal status.
    finished: list[str]
    #: How many of them recorded a webhook delivery (the webhook lane should be woken).
    webhooks: int = 0


def finish_jobs(conn: Connection, job_ids: Sequence[str], now: datetime) -> Settled:
    """Move every job of ``job_ids`` whose work is all done to its terminal status, set-based.

    Every path to a terminal status (settle after drains, the sweeper, cancel) comes
    through here, so this is where a job's webhook delivery is recorded: in the same
    transaction, so a finished job with a callback URL always has one (an outbox). The
    job rows are locked (in id order) and their counters read again under the lock, so of
    two drains finishing a job at once only one finishes it.
    """
    if not job_ids:
        return Settled([])
    rows = conn.execute(
        select(jobs.c.id, jobs.c.total, jobs.c.tenant_id, jobs.c.callback_url)
        .where(jobs.c.id.in_(sorted(job_ids)), jobs.c.status.in_(OPEN_STATUSES))
        .order_by(jobs.c.id)
        .with_for_update()
    ).all()
    if not rows:
        return Settled([])
    counts = _counts(conn, {row.id: row.total for row in rows})
    finals = {
        row.id: final for row in rows if (final := terminal_status(counts[row.id])) is not None
    }
    if not finals:
        return Settled([])
    ran = [job_id for job_id in finals if counts[job_id].succeeded or counts[job_id].failed]
    conn.execute(
        update(jobs)
        .where(jobs.c.id == bindparam("job_id"))
        .values(status=bindparam("final"), finished_at=now),
        [{"job_id": job_id, "final": final.value} for job_id, final in finals.items()],
    )
    if ran:  # something ran: the job was processing, whether or not a drain said so
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(ran))
            .values(started_at=func.coalesce(jobs.c.started_at, now))
        )
    history = [
        {"job_id": job_id, "status": JobStatus.PROCESSING.value, "at": now} for job_id in ran
    ] + [{"job_id": job_id, "status": final.value, "at": now} for job_id, final in finals.items()]
    conn.execute(dialect_insert(conn, job_status_history).on_conflict_do_nothing(), history)
    callbacks = [row for row in rows if row.id in finals and row.callback_url is not None]
    record_deliveries(conn, [(row.id, row.tenant_id, row.callback_url) for row in callbacks], now)
    return Settled(sorted(finals), len(callbacks))


#: The open statuses as SQL literals, for statements written out by hand.
OPEN_STATUS_LIST = ", ".join(f"'{status}'" for status in OPEN_STATUSES)


def looking_done(conn: Connection, job_ids: Iterable[str]) -> list[str]:
    """The open jobs of ``job_ids`` whose counters say nothing is pending, read without
    locks (a drain asks in autocommit: one round trip, and most answers are "none").

    A job has a counter per partition, and a drain asks after every partition it
    finishes: the question stops at the first partition still pending, so a job of many
    partitions is not summed whole each time one of them finishes.
    """
    wanted = sorted(set(job_ids))
    # On PostgreSQL the ids go as one array: one statement text and one bound value
    # however many jobs are asked about.
    asked = (
        jobs.c.id == any_(bindparam("ids", wanted, type_=postgresql.ARRAY(String)))
        if is_postgres(conn)
        else jobs.c.id.in_(wanted)
    )
    c = job_counts
    still_pending = select(c.c.job_id).where(c.c.job_id == jobs.c.id, c.c.pending > 0).exists()
    return list(
        conn.execute(
            select(jobs.c.id).where(asked, jobs.c.status.in_(OPEN_STATUSES), ~still_pending)
        ).scalars()
    )


def settle(conn: Connection, job_ids: Iterable[str], now: datetime) -> Settled:
    """Finish the jobs of ``job_ids`` whose counters say nothing is pending.

    Runs after the batch that changed the counters has committed. Which jobs look done
    is read without locks first (``looking_done``), and only those are locked and
    finished.
    """
    return finish_jobs(conn, looking_done(conn, job_ids), now)


def _open_jobs(tenant_id: str, excluding: str | None) -> list[ColumnElement[bool]]:
    where = [jobs.c.tenant_id == tenant_id, jobs.c.status.in_(OPEN_STATUSES)]
    if excluding is not None:
        where.append(jobs.c.id != excluding)
    return where


def open_operations_bound(conn: Connection, tenant_id: str, excluding: str | None = None) -> int:
    """The sum of the tenant's open jobs' totals (but ``excluding``'s): an upper bound of
    its pending operations that costs a row per job, not a row per (job, partition)."""
    total = select(func.coalesce(func.sum(jobs.c.total), 0)).where(
        *_open_jobs(tenant_id, excluding)
    )
    return int(conn.execute(total).scalar_one())


def pending_operations(
    conn: Connection, tenant_id: str, *, unless_at_most: int, excluding: str | None = None
) -> int:
    """The tenant's accepted operations not yet finished, from its open jobs' counters
    (a few rows per job, however many operations are waiting); those of the job
    ``excluding`` (one being admitted) do not count.

    When ``open_operations_bound`` is at most ``unless_at_most``, that bound is returned
    instead, which is what a check against a cap needs.
    """
    bound = open_operations_bound(conn, tenant_id, excluding)
    if bound <= unless_at_most:
        return bound
    c = job_counts
    return int(
        conn.execute(
            select(func.coalesce(func.sum(c.c.pending), 0))
            .select_from(c.join(jobs, jobs.c.id == c.c.job_id))
            .where(*_open_jobs(tenant_id, excluding))
        ).scalar_one()
    )


def open_job_ids(conn: Connection) -> list[str]:
    return list(conn.execute(select(jobs.c.id).where(jobs.c.status.in_(OPEN_STATUSES))).scalars())


def pending_partitions(conn: Connection) -> list[int]:
    o = operations
    return list(
        conn.execute(
            select(o.c.partition).where(o.c.status == OpStatus.PENDING.value).distinct()
        ).scalars()
    )


#: Rows per statement when a cancel names operations or keys one by one.
_CANCEL_CHUNK = 1000


def cancel(conn: Connection, tenant_id: str, job_id: str, now: datetime) -> bool:
    """Cancel every operation of the job not yet applied; applied ones stay.

    Idempotent: cancelling a job that is already cancelled changes nothing and is not an
    error, so concurrent or retried cancels all succeed alike on every database; a job
    that finished otherwise is ``JobFinished``. Operations a drain holds right now are
    skipped, never waited for: that drain applies them (they were already under way),
    or, should it fail, a later drain cancels them (it sees ``cancelled_at``).

    Returns whether a webhook delivery was recorded (the webhook lane should be woken).
    """
    status = conn.execute(
        select(jobs.c.status)
        .where(jobs.c.id == job_id, jobs.c.tenant_id == tenant_id)
        .with_for_update()
    ).scalar()
    if status is None:
        raise NotFound(f"No job {job_id}.")
    if status == JobStatus.CANCELLED.value:
        return False
    if JobStatus(status).is_terminal:
        raise JobFinished(f"Job {job_id} is already {status}.")
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(cancelled_at=now))
    cancelled_in = _cancel_reachable(conn, job_id, now)
    c = job_counts
    for partition, cancelled in sorted(cancelled_in.items()):
        conn.execute(
            update(c)
            .where(c.c.job_id == job_id, c.c.partition == partition)
            .values(cancelled=c.c.cancelled + cancelled, pending=c.c.pending - cancelled)
        )
    return finish_jobs(conn, [job_id], now).webhooks > 0


#: Cancel on PostgreSQL, one statement whatever the job's size: its pending operations
#: not held by a drain, then one pending operation fewer on each of their keys (a job has
#: at most one per key), rows locked in the key order admissions use.
_PG_CANCEL = """
WITH gone AS (
    UPDATE operations SET status = 'cancelled', finished_at = %(now)s
    WHERE id IN (
        SELECT id FROM operations WHERE job_id = %(job)s AND status = 'pending'
        FOR UPDATE SKIP LOCKED)
    RETURNING partition, tenant_id, type, rid
),
locked AS (
    SELECT r.tenant_id, r.type, r.rid FROM resources AS r
    JOIN gone AS g ON r.tenant_id = g.tenant_id AND r.type = g.type AND r.rid = g.rid
    ORDER BY r.tenant_id, r.type, r.rid
    FOR UPDATE OF r
),
freed AS (
    UPDATE resources AS r SET pending = r.pending - 1
    FROM locked AS k
    WHERE r.tenant_id = k.tenant_id AND r.type = k.type AND r.rid = k.rid
)
SELECT partition, count(*) FROM gone GROUP BY partition
"""


def _cancel_reachable(conn: Connection, job_id: str, now: datetime) -> dict[int, int]:
    """Cancel the job's pending operations no drain holds; how many, per partition."""
    if is_postgres(conn):
        cursor = driver_cursor(conn)
        cursor.execute(_PG_CANCEL, {"job": job_id, "now": now})
        return {int(partition): int(count) for partition, count in cursor.fetchall()}
    o = operations
    reachable = conn.execute(
        select(o.c.id, o.c.partition, o.c.tenant_id, o.c.type, o.c.rid).where(
            o.c.job_id == job_id, o.c.status == OpStatus.PENDING.value
        )
    ).all()
    for chunk in _chunks([row.id for row in reachable]):
        conn.execute(
            update(o)
            .where(o.c.id.in_(chunk))
            .values(status=OpStatus.CANCELLED.value, finished_at=now)
        )
    r = resources
    row_key = tuple_(r.c.tenant_id, r.c.type, r.c.rid)
    for chunk in _chunks(sorted((row.tenant_id, row.type, row.rid) for row in reachable)):
        conn.execute(update(r).where(row_key.in_(chunk)).values(pending=r.c.pending - 1))
    return dict(Counter(row.partition for row in reachable))


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CANCEL_CHUNK):
        yield items[start : start + _CANCEL_CHUNK]


def purge_finished(conn: Connection, finished_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` jobs that finished before the cutoff, with their results.

    Resources are never purged: only the record of how they were written.
    """
    job_ids = list(
        conn.execute(
            select(jobs.c.id)
            .where(jobs.c.finished_at < finished_before)
            .order_by(jobs.c.finished_at)
            .limit(limit)
        ).scalars()
    )
    if not job_ids:
        return 0
    purge_deliveries(conn, job_ids)
    for table in (operations, job_counts, job_status_history, status_tokens):
        conn.execute(delete(table).where(table.c.job_id.in_(job_ids)))
    conn.execute(delete(jobs).where(jobs.c.id.in_(job_ids)))
    return len(job_ids)
