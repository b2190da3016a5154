"""Admission: the job, its operations and their per-key sequence numbers, in one transaction."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from bulkapi.core.errors import IdempotencyKeyInUse, IdempotencyKeyReused, RateLimited
from bulkapi.core.jobs import JobStatus
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation
from bulkapi.ids import digest, id_time, new_id, new_secret
from bulkapi.store.bulk_sql import JobOperations, JobRows, Later, bulk_sql_for
from bulkapi.store.database import as_utc, is_postgres
from bulkapi.store.jobs import pending_operations
from bulkapi.store.tables import jobs, status_tokens

#: How long an Idempotency-Key keeps answering with its original job.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
#: Operations up to which a job's keys are numbered in the statement that writes the
#: operations; beyond, that statement's sorts and join cost more than ``COPY`` saves.
ONE_STATEMENT_MAX = 1000


@dataclass(frozen=True, slots=True)
class Idempotency:
    key: str
    #: Digest of the request body (and its query), to tell a replay from a reuse.
    request_hash: str


@dataclass(frozen=True, slots=True)
class NewJob:
    """A bulk request's job, before its operations: its keys are all admission locks
    and numbers, so they go ahead while the operations' documents are still checked."""

    tenant_id: str
    #: The operations' keys, in request order (each at most once).
    keys: Sequence[ResourceKey]
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


def check_pending_cap(
    conn: Connection, tenant_id: str, adding: int, cap: int, *, excluding: str | None = None
) -> None:
    """Refuse new work while the tenant already has ``cap`` operations waiting (those of
    the job ``excluding``, the one being admitted, not counted).

    A soft cap: two admissions racing may both pass, overshooting by one request. The
    count comes from the open jobs' totals while those stay within the cap, and from
    their counters once they do not, so it costs the same with ten operations waiting or
    a million.
    """
    pending = pending_operations(conn, tenant_id, unless_at_most=cap - adding, excluding=excluding)
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


class Admission:
    """A job on its way in: its rows are sent on entering, and ``write`` adds the
    operations.

    Two ways. A small job's operations, checked already (``overlap`` False): ``write``
    numbers their keys and writes them in one statement, sent with the job's rows, so
    the keys' rows are locked only for that statement and the commit (on hot keys,
    admissions and drains queue on those rows). Otherwise the keys are numbered on
    entering, in pipeline mode on PostgreSQL (with ``overlap`` the server locks and
    numbers them while the caller checks the operations), and ``write`` adds the
    operations with ``COPY``.
    """

    #: Whether the cheap bound of the tenant's pending work left room for the job.
    _fits: Later[bool]
    _sequences: Later[list[int]]

    def __init__(
        self,
        conn: Connection,
        job: NewJob,
        now: datetime,
        *,
        pending_cap: int,
        overlap: bool,
        replay: Admitted | None = None,
    ) -> None:
        self._conn = conn
        self._job = job
        self._now = now
        self._pending_cap = pending_cap
        self._keys_first = overlap or len(job.keys) > ONE_STATEMENT_MAX
        self._replay = replay
        self._sending = ExitStack()
        self._job_id = new_id("job")
        self._status_token = new_secret("jst")

    def __enter__(self) -> Admission:
        if self._replay is None:
            self._send()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._sending.__exit__(*exc_info)

    def _send(self) -> None:
        job, conn = self._job, self._conn
        bulk = bulk_sql_for(conn)
        created_at = id_time(self._job_id)
        rows = JobRows(
            {
                "id": self._job_id,
                "tenant_id": job.tenant_id,
                "status": JobStatus.QUEUED.value,
                "total": len(job.keys),
                "created_at": created_at,
                "callback_url": job.callback_url,
                "meta": job.metadata,
                "deadline": job.deadline,
                "idempotency_key": job.idempotency.key if job.idempotency else None,
                "request_hash": job.idempotency.request_hash if job.idempotency else None,
                "retry_of": job.retry_of,
            },
            digest(self._status_token),
            sorted(Counter(job.partitions).items()),
        )
        with ExitStack() as sending, self._key_in_use():
            sending.enter_context(bulk.overlapping(conn))
            self._fits = bulk.insert_job(conn, rows, room=self._pending_cap - len(job.keys))
            if self._keys_first:
                # The keys' rows are locked last: an admission holds them only while its
                # operations are checked, written and committed.
                self._sequences = bulk.allocate_sequences(conn, job.tenant_id, job.keys, self._now)
            self._sending = sending.pop_all()  # left in ``write`` or on the way out

    def write(self, operations: Sequence[Operation]) -> Admitted:
        """Add the operations (one per key, in the keys' order) and return the job; the
        caller commits, then wakes the partitions. A replay writes nothing."""
        if self._replay is not None:
            return self._replay
        job = self._job
        bulk = bulk_sql_for(self._conn)
        rows = JobOperations(self._job_id, job.tenant_id, operations, job.partitions)
        with self._key_in_use():
            if not self._keys_first:
                bulk.admit_operations(self._conn, rows, self._now)
            self._sending.close()  # one sync for every result; COPY cannot run in a pipeline
        fits = self._fits()
        sequences = self._sequences() if self._keys_first else None
        if not fits:  # the open jobs' totals leave no room; their counters may (work done since)
            check_pending_cap(
                self._conn,
                job.tenant_id,
                len(job.keys),
                self._pending_cap,
                excluding=self._job_id,
            )
        if sequences is not None:
            bulk.insert_operations(self._conn, rows, sequences)
        return Admitted(
            self._job_id, self._status_token, frozenset(job.partitions), id_time(self._job_id)
        )

    @contextmanager
    def _key_in_use(self) -> Iterator[None]:
        """A unique violation of the job's row is a concurrent request with the same
        Idempotency-Key (the job id is new)."""
        try:
            yield
        except (IntegrityError, psycopg.errors.UniqueViolation):
            if self._job.idempotency is None:
                raise
            raise IdempotencyKeyInUse(
                "A request with this Idempotency-Key is being processed; retry shortly."
            ) from None


def overlaps(engine: Engine) -> bool:
    """Whether checking a job's operations inside ``admitting(..., overlap=True)`` runs
    beside the database's work on its keys. On PostgreSQL it does; SQLite runs in this
    process, so its statements would only run first, and the checks would then hold its
    one writer lock: check first there."""
    return is_postgres(engine)


@contextmanager
def admitting(
    conn: Connection, job: NewJob, now: datetime, *, pending_cap: int, overlap: bool
) -> Iterator[Admission]:
    """Record a bulk request in two steps: entering sends the job's rows (and, with
    ``overlap`` or for a large job, its keys' sequence numbers: checking the operations
    meanwhile overlaps the database's work on the keys); ``write`` adds the operations
    (a small job's in the statement that numbers their keys). If the block raises,
    nothing was written (the caller's transaction rolls back).

    A replay comes first (it records nothing, so the cap does not apply to it); then the
    job's rows, kept only if the tenant's open jobs leave room under ``pending_cap``
    (``check_pending_cap``): the cheap bound is read with the job's own rows.
    """
    replay = None
    if job.idempotency is not None:
        replay = find_replay(conn, job.tenant_id, job.idempotency, now)
    with Admission(
        conn, job, now, pending_cap=pending_cap, overlap=overlap, replay=replay
    ) as admission:
        yield admission


def admit(
    conn: Connection,
    job: NewJob,
    operations: Sequence[Operation],
    now: datetime,
    *,
    pending_cap: int,
) -> Admitted:
    """``admitting`` in one step, for operations checked already."""
    with admitting(conn, job, now, pending_cap=pending_cap, overlap=False) as admission:
        return admission.write(operations)
