"""Admission: the job, its operations and their per-key sequence numbers, in one transaction."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from bulkapi.core.errors import IdempotencyKeyInUse, IdempotencyKeyReused, RateLimited
from bulkapi.core.jobs import JobStatus
from bulkapi.core.operations import Operation
from bulkapi.ids import digest, id_time, new_id, new_secret
from bulkapi.store.bulk_sql import JobOperations, JobRows, bulk_sql_for
from bulkapi.store.database import as_utc
from bulkapi.store.jobs import pending_operations
from bulkapi.store.tables import jobs, status_tokens

#: How long an Idempotency-Key keeps answering with its original job.
IDEMPOTENCY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Idempotency:
    key: str
    #: Digest of the request body (and its query), to tell a replay from a reuse.
    request_hash: str


@dataclass(frozen=True, slots=True)
class NewJob:
    tenant_id: str
    operations: Sequence[Operation]
    partitions: Sequence[int]
    callback_url: str | None = None
    metadata: dict[str, Any] | None = None
    deadline: datetime | None = None
    idempotency: Idempotency | None = None
    #: The job whose failed operations this one runs again (``POST /v1/jobs/{id}/retry``).
    retry_of: str | None = None


@dataclass(frozen=True, slots=True)
class Admitted:
    job_id: str
    status_token: str
    partitions: frozenset[int]
    #: The job's ``created_at``: its id's own time, so newest-first by id is by time too.
    created_at: datetime
    #: True when an Idempotency-Key matched an earlier job: nothing new was recorded.
    replayed: bool = False


def check_pending_cap(conn: Connection, tenant_id: str, adding: int, cap: int) -> None:
    """Refuse new work while the tenant already has ``cap`` operations waiting.

    A soft cap: two admissions racing may both pass, overshooting by one request. The
    count comes from the open jobs' totals while those stay within the cap, and from
    their counters once they do not, so it costs the same with ten operations waiting or
    a million.
    """
    pending = pending_operations(conn, tenant_id, unless_at_most=cap - adding)
    if pending + adding > cap:
        raise RateLimited(
            f"{pending} operations are still pending for this tenant (cap {cap}).",
            code="too_many_pending_operations",
            retry_after=5,
        )


def issue_status_token(conn: Connection, job_id: str) -> str:
    token = new_secret("jst")
    conn.execute(status_tokens.insert().values(token_hash=digest(token), job_id=job_id))
    return token


def replayed_job(
    conn: Connection, tenant_id: str, idempotency: Idempotency, now: datetime
) -> tuple[str, datetime] | None:
    """The job (id, creation time) an earlier request with this key created within the
    window (24 h), or None if the key is free; ``IdempotencyKeyReused`` if that request
    was a different one. Reads only, so a dry run may ask too."""
    found = _holder(conn, tenant_id, idempotency, now)
    return None if found is None or found[2] else found[:2]


def _holder(
    conn: Connection, tenant_id: str, idempotency: Idempotency, now: datetime
) -> tuple[str, datetime, bool] | None:
    """The job holding the key (id, creation time, whether its window has passed), or
    None; ``IdempotencyKeyReused`` if it is in its window for a different request."""
    row = conn.execute(
        select(jobs.c.id, jobs.c.request_hash, jobs.c.created_at).where(
            jobs.c.tenant_id == tenant_id, jobs.c.idempotency_key == idempotency.key
        )
    ).first()
    if row is None:
        return None
    created_at = as_utc(row.created_at)
    assert created_at is not None
    expired = now - created_at > IDEMPOTENCY_WINDOW
    if not expired and row.request_hash != idempotency.request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request in the last 24 hours."
        )
    return row.id, created_at, expired


def find_replay(
    conn: Connection, tenant_id: str, idempotency: Idempotency, now: datetime
) -> Admitted | None:
    """The job an earlier request with this key created, if it still counts (24 h).

    A key older than the window is released here, so the new request may take it; a key
    nobody holds costs the one read.
    """
    found = _holder(conn, tenant_id, idempotency, now)
    if found is None:
        return None
    job_id, created_at, expired = found
    if expired:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(idempotency_key=None))
        return None
    return Admitted(
        job_id, issue_status_token(conn, job_id), frozenset(), created_at, replayed=True
    )


def admit(conn: Connection, job: NewJob, now: datetime, *, pending_cap: int) -> Admitted:
    """Record a validated bulk request; the caller commits, then wakes the partitions.

    A replay comes first (it records nothing, so the cap does not apply to it); then the
    job's rows, written only if the tenant's open jobs leave room under ``pending_cap``
    (``check_pending_cap``), a check that goes with the job's own rows in one statement.
    """
    if job.idempotency is not None:
        replay = find_replay(conn, job.tenant_id, job.idempotency, now)
        if replay is not None:
            return replay
    job_id = new_id("job")
    created_at = id_time(job_id)
    status_token = new_secret("jst")
    bulk = bulk_sql_for(conn)
    rows = JobRows(
        {
            "id": job_id,
            "tenant_id": job.tenant_id,
            "status": JobStatus.QUEUED.value,
            "total": len(job.operations),
            "created_at": created_at,
            "callback_url": job.callback_url,
            "meta": job.metadata,
            "deadline": job.deadline,
            "idempotency_key": job.idempotency.key if job.idempotency else None,
            "request_hash": job.idempotency.request_hash if job.idempotency else None,
            "retry_of": job.retry_of,
        },
        digest(status_token),
        sorted(Counter(job.partitions).items()),
    )
    try:
        if not bulk.insert_job(conn, rows, room=pending_cap - len(job.operations)):
            # The open jobs' totals leave no room; their counters may (work done since).
            check_pending_cap(conn, job.tenant_id, len(job.operations), pending_cap)
            bulk.insert_job(conn, rows, room=None)
    except IntegrityError:
        if job.idempotency is None:
            raise
        raise IdempotencyKeyInUse(
            "A request with this Idempotency-Key is being processed; retry shortly."
        ) from None
    # The keys' rows are locked last: an admission holds them only while its operations
    # are written and committed, which is all that admissions and drains over the same
    # (hot) keys wait on each other for.
    sequences = bulk.allocate_sequences(conn, job.tenant_id, [op.key for op in job.operations], now)
    bulk.insert_operations(
        conn,
        JobOperations(job_id, job.tenant_id, job.operations, job.partitions, sequences),
    )
    return Admitted(job_id, status_token, frozenset(job.partitions), created_at)
