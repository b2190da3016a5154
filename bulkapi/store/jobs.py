"""Reading jobs and moving them through their states."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.engine import Connection

from bulkapi.core.errors import JobFinished, NotFound
from bulkapi.core.jobs import OPEN_STATUSES, STATUS_RANK, Counts, JobStatus, terminal_status
from bulkapi.core.operations import OpStatus
from bulkapi.store.database import as_utc, dialect_insert
from bulkapi.store.effects import EffectRecord, effects_of_operations, effects_summary_is
from bulkapi.store.retries import retried_by
from bulkapi.store.tables import (
    job_counts,
    job_status_history,
    jobs,
    operations,
    resources,
    status_tokens,
)
from bulkapi.store.webhooks import purge_deliveries, record_delivery


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

_JOB_COLUMNS = (
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
)


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


def _history(
    conn: Connection, job_ids: Sequence[str]
) -> dict[str, list[tuple[JobStatus, datetime]]]:
    h = job_status_history
    result: dict[str, list[tuple[JobStatus, datetime]]] = {job_id: [] for job_id in job_ids}
    for row in conn.execute(select(h.c.job_id, h.c.status, h.c.at).where(h.c.job_id.in_(job_ids))):
        result[row.job_id].append((JobStatus(row.status), as_utc(row.at)))  # type: ignore[arg-type]
    for entries in result.values():
        entries.sort(key=lambda entry: STATUS_RANK[entry[0]])
    return result


def _records(conn: Connection, rows: Sequence[Any]) -> list[JobRecord]:
    ids = [row.id for row in rows]
    counts = _counts(conn, {row.id: row.total for row in rows})
    history = _history(conn, ids)
    retries = retried_by(conn, ids)
    return [
        JobRecord(
            row.id,
            JobStatus(row.status),
            as_utc(row.created_at),  # type: ignore[arg-type]
            as_utc(row.started_at),
            as_utc(row.finished_at),
            counts[row.id],
            history[row.id],
            row.callback_url,
            row.meta,
            as_utc(row.deadline),
            row.retry_of,
            retries.get(row.id, ()),
        )
        for row in rows
    ]


def get_job(conn: Connection, tenant_id: str, job_id: str) -> JobRecord:
    row = conn.execute(
        select(*_JOB_COLUMNS).where(jobs.c.id == job_id, jobs.c.tenant_id == tenant_id)
    ).first()
    if row is None:
        raise NotFound(f"No job {job_id}.")
    return _records(conn, [row])[0]


def list_jobs(
    conn: Connection, tenant_id: str, status: str | None, limit: int, before: str | None
) -> list[JobRecord]:
    """Newest first; ids sort by creation time, so ``before`` is a keyset cursor."""
    query = select(*_JOB_COLUMNS).where(jobs.c.tenant_id == tenant_id)
    if status is not None:
        query = query.where(jobs.c.status == status)
    if before is not None:
        query = query.where(jobs.c.id < before)
    rows = conn.execute(query.order_by(jobs.c.id.desc()).limit(limit)).all()
    return _records(conn, rows)


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


def _record_status(conn: Connection, job_id: str, status: JobStatus, at: datetime) -> None:
    insert = dialect_insert(conn, job_status_history).values(
        job_id=job_id, status=status.value, at=at
    )
    conn.execute(insert.on_conflict_do_nothing())


@dataclass(frozen=True, slots=True)
class Finished:
    status: JobStatus
    #: Whether a webhook delivery was recorded (the job has a callback URL).
    webhook: bool


def _finish(conn: Connection, job_id: str, counts: Counts, now: datetime) -> Finished | None:
    """Move a job whose work is all done to its terminal status; caller holds the job row.

    Every path to a terminal status (settle after drains, the deadline, cancel) comes
    through here, so this is where the job's webhook delivery is recorded: in the same
    transaction, so a finished job with a callback URL always has one (an outbox).
    """
    final = terminal_status(counts)
    if final is None:
        return None
    values: dict[str, Any] = {"status": final.value, "finished_at": now}
    if counts.succeeded or counts.failed:  # something ran: the job was processing
        _record_status(conn, job_id, JobStatus.PROCESSING, now)
        values["started_at"] = func.coalesce(jobs.c.started_at, now)
    _record_status(conn, job_id, final, now)
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
    return Finished(final, record_delivery(conn, job_id, now))


@dataclass(frozen=True, slots=True)
class Settled:
    #: Jobs this settle moved to a terminal status.
    finished: list[str]
    #: How many of them recorded a webhook delivery (the webhook lane should be woken).
    webhooks: int = 0


def settle(conn: Connection, job_ids: Iterable[str], now: datetime) -> Settled:
    """Bring job statuses in line with their counters; say which jobs finished.

    Runs after the batch that changed the counters has committed. Of two partitions
    finishing a job's last operations at once, at least the later one sees every
    counter here, and the job row lock makes sure only one of them finishes the job.
    """
    rows = conn.execute(
        select(jobs.c.id, jobs.c.status, jobs.c.total)
        .where(jobs.c.id.in_(sorted(job_ids)), jobs.c.status.in_(OPEN_STATUSES))
        .order_by(jobs.c.id)  # job rows are locked below in this (one global) order
    ).all()
    if not rows:
        return Settled([])
    finished = []
    webhooks = 0
    counts = _counts(conn, {row.id: row.total for row in rows})
    for row in rows:
        job_counts_now = counts[row.id]
        if job_counts_now.pending == 0:
            locked = conn.execute(
                select(jobs.c.status).where(jobs.c.id == row.id).with_for_update()
            ).scalar()
            done = (
                _finish(conn, row.id, _counts(conn, {row.id: row.total})[row.id], now)
                if locked in OPEN_STATUSES
                else None
            )
            if done is not None:
                finished.append(row.id)
                webhooks += done.webhook
        elif row.status == JobStatus.QUEUED.value and job_counts_now.pending < row.total:
            moved = conn.execute(
                update(jobs)
                .where(jobs.c.id == row.id, jobs.c.status == JobStatus.QUEUED.value)
                .values(status=JobStatus.PROCESSING.value, started_at=now)
            ).rowcount
            if moved:
                _record_status(conn, row.id, JobStatus.PROCESSING, now)
    return Settled(finished, webhooks)


def pending_operations(conn: Connection, tenant_id: str) -> int:
    """The tenant's accepted operations not yet finished, from its open jobs' counters:
    a few rows per job, however many operations are waiting."""
    c = job_counts
    return int(
        conn.execute(
            select(func.coalesce(func.sum(c.c.pending), 0))
            .select_from(c.join(jobs, jobs.c.id == c.c.job_id))
            .where(jobs.c.tenant_id == tenant_id, jobs.c.status.in_(OPEN_STATUSES))
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
    o = operations
    reachable = conn.execute(
        select(o.c.id, o.c.partition, o.c.tenant_id, o.c.type, o.c.rid)
        .where(o.c.job_id == job_id, o.c.status == OpStatus.PENDING.value)
        .with_for_update(skip_locked=True)
    ).all()
    for chunk in _chunks([row.id for row in reachable]):
        conn.execute(
            update(o)
            .where(o.c.id.in_(chunk))
            .values(status=OpStatus.CANCELLED.value, finished_at=now)
        )
    _release_keys(conn, sorted((row.tenant_id, row.type, row.rid) for row in reachable))
    c = job_counts
    for partition, cancelled in sorted(Counter(row.partition for row in reachable).items()):
        conn.execute(
            update(c)
            .where(c.c.job_id == job_id, c.c.partition == partition)
            .values(cancelled=c.c.cancelled + cancelled, pending=c.c.pending - cancelled)
        )
    total = conn.execute(select(jobs.c.total).where(jobs.c.id == job_id)).scalar_one()
    done = _finish(conn, job_id, _counts(conn, {job_id: total})[job_id], now)
    return done is not None and done.webhook


def _release_keys(conn: Connection, keys: Sequence[tuple[str, str, str]]) -> None:
    """One pending operation fewer on each key (a job has at most one per key), locking
    the rows in the one global order admissions use."""
    r = resources
    row_key = tuple_(r.c.tenant_id, r.c.type, r.c.rid)
    for chunk in _chunks(keys):
        conn.execute(
            select(r.c.tenant_id)
            .where(row_key.in_(chunk))
            .order_by(r.c.tenant_id, r.c.type, r.c.rid)
            .with_for_update()
        ).all()
        conn.execute(update(r).where(row_key.in_(chunk)).values(pending=r.c.pending - 1))


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
