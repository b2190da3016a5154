"""The webhook outbox: a delivery recorded with the job's end, claimed, attempted, recorded.

A delivery row is inserted in the transaction that makes its job terminal
(``store/jobs.py:finish_jobs``), so a finished job with a callback URL always has one and a
rolled-back finish never does. Senders claim due rows (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several worker processes never claim the same row; SQLite transactions
are exclusive already), a few per tenant at a time, and count the attempt before making
it. An attempt's outcome is applied only while its delivery still waits on it, so an
outcome that comes after the claim lapsed cannot undo what a later attempt recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from bulkapi.core.webhooks import DeliveryStatus
from bulkapi.ids import new_id
from bulkapi.store.database import as_utc, dialect_insert, is_postgres
from bulkapi.store.tables import tenants, webhook_attempts, webhook_deliveries

_PENDING = DeliveryStatus.PENDING.value
#: Shown for an attempt until its outcome is recorded; stays if the sender died.
NO_OUTCOME = "no outcome recorded: in progress, or the sender stopped during the attempt"


def record_deliveries(
    conn: Connection, finished: Sequence[tuple[str, str, str]], now: datetime
) -> None:
    """Record a delivery for each (job id, tenant id, callback URL) of jobs that just
    finished with a callback URL."""
    if not finished:
        return
    statement = dialect_insert(conn, webhook_deliveries).on_conflict_do_nothing(
        index_elements=["job_id"]
    )
    conn.execute(
        statement,
        [
            {
                "id": new_id("msg"),
                "job_id": job_id,
                "tenant_id": tenant_id,
                "url": url,
                "status": _PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for job_id, tenant_id, url in finished
        ],
    )


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: str
    job_id: str
    tenant_id: str
    url: str
    #: The attempt about to be made (1-based).
    attempt: int
    #: None until the first attempt fixes it (the caller renders and stores it).
    payload: str | None
    secret: str


def _due(now: datetime) -> ColumnElement[bool]:
    d = webhook_deliveries
    return and_(d.c.status == _PENDING, d.c.next_attempt_at <= now)


def _fair_share(
    now: datetime, limit: int, per_tenant: int, busy: Mapping[str, int]
) -> Select[tuple[str]]:
    """Ids of up to ``limit`` due deliveries, at most ``per_tenant`` of each tenant less
    the ones ``busy`` says it has in flight already, taken in turn: every tenant's oldest
    before anyone's second, so one tenant's backlog cannot fill a claim."""
    d = webhook_deliveries
    rank = func.row_number().over(
        partition_by=d.c.tenant_id, order_by=(d.c.next_attempt_at, d.c.id)
    )
    ranked = (
        select(d.c.id, d.c.tenant_id, d.c.next_attempt_at, rank.label("rank"))
        .where(_due(now))
        .subquery()
    )
    share: ColumnElement[int] | int = per_tenant
    if busy:
        left = {tenant: per_tenant - count for tenant, count in busy.items()}
        share = case(left, value=ranked.c.tenant_id, else_=per_tenant)
    return (
        select(ranked.c.id)
        .where(ranked.c.rank <= share)
        .order_by(ranked.c.rank, ranked.c.next_attempt_at, ranked.c.id)
        .limit(limit)
    )


def claim_due(
    conn: Connection,
    now: datetime,
    limit: int,
    lease_until: datetime,
    max_attempts: int,
    *,
    per_tenant: int,
    busy: Mapping[str, int] | None = None,
) -> list[ClaimedDelivery]:
    """Claim up to ``limit`` due deliveries, at most ``per_tenant`` per tenant counting
    those ``busy`` (tenant → attempts the caller has in flight): count their next
    attempt and record it as begun, and move them out of reach until ``lease_until``
    (the attempt's outcome sets the real retry time). A delivery whose attempts are used
    up (the last one's sender died) is marked failed instead."""
    d = webhook_deliveries
    chosen = _fair_share(now, limit, per_tenant, busy or {})
    query = (
        select(d.c.id, d.c.job_id, d.c.tenant_id, d.c.url, d.c.attempts, d.c.payload)
        .where(d.c.id.in_(chosen.scalar_subquery()), _due(now))
        .order_by(d.c.next_attempt_at, d.c.id)
    )
    if is_postgres(conn):
        query = query.with_for_update(skip_locked=True)
    rows = conn.execute(query).all()
    if not rows:
        return []
    used_up = [row.id for row in rows if row.attempts >= max_attempts]
    if used_up:
        conn.execute(
            update(d)
            .where(d.c.id.in_(used_up))
            .values(status=DeliveryStatus.FAILED.value, finished_at=now)
        )
    to_claim = [row for row in rows if row.attempts < max_attempts]
    if not to_claim:
        return []
    secrets = {
        row.id: row.signing_secret
        for row in conn.execute(
            select(tenants.c.id, tenants.c.signing_secret).where(
                tenants.c.id.in_({row.tenant_id for row in to_claim})
            )
        )
    }
    conn.execute(
        update(d)
        .where(d.c.id.in_([row.id for row in to_claim]))
        .values(attempts=d.c.attempts + 1, next_attempt_at=lease_until)
    )
    conn.execute(
        insert(webhook_attempts),
        [
            {"delivery_id": row.id, "attempt": row.attempts + 1, "at": now, "error": NO_OUTCOME}
            for row in to_claim
        ],
    )
    return [
        ClaimedDelivery(
            row.id,
            row.job_id,
            row.tenant_id,
            row.url,
            row.attempts + 1,
            row.payload,
            secrets[row.tenant_id],
        )
        for row in to_claim
        if row.tenant_id in secrets
    ]


def set_payload(conn: Connection, delivery_id: str, payload: str) -> None:
    """Fix the body every attempt of this delivery sends (and signs)."""
    conn.execute(
        update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery_id)
        .values(payload=payload)
    )


@dataclass(frozen=True, slots=True)
class AttemptResult:
    delivery_id: str
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: int
    #: The delivery's status after this attempt.
    outcome: DeliveryStatus
    #: When to try again (only for PENDING).
    retry_at: datetime | None


def record_result(conn: Connection, result: AttemptResult, now: datetime) -> bool:
    """Record an attempt's outcome: on its attempt row always (the attempt was made), on
    the delivery only while it still waits on this attempt (``pending``, ``attempts`` =
    this one). Returns whether the delivery took it: not when the outcome came after its
    claim lapsed and the delivery was claimed again or ended, whose status and next
    attempt a late outcome must not overwrite."""
    a, d = webhook_attempts, webhook_deliveries
    conn.execute(
        update(a)
        .where(a.c.delivery_id == result.delivery_id, a.c.attempt == result.attempt)
        .values(status_code=result.status_code, error=result.error, duration_ms=result.duration_ms)
    )
    values: dict[str, Any]
    if result.outcome is DeliveryStatus.PENDING:
        values = {"next_attempt_at": result.retry_at}
    else:
        values = {"status": result.outcome.value, "finished_at": now}
    applied = conn.execute(
        update(d)
        .where(
            d.c.id == result.delivery_id,
            d.c.status == _PENDING,
            d.c.attempts == result.attempt,
        )
        .values(**values)
    )
    return applied.rowcount == 1


def any_due(conn: Connection, now: datetime) -> bool:
    found = conn.execute(select(webhook_deliveries.c.id).where(_due(now)).limit(1)).first()
    return found is not None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int | None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: str
    url: str
    status: str
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    attempts: tuple[AttemptRecord, ...]


def delivery_of_job(conn: Connection, job_id: str) -> DeliveryRecord | None:
    d, a = webhook_deliveries, webhook_attempts
    row = conn.execute(
        select(
            d.c.id, d.c.url, d.c.status, d.c.next_attempt_at, d.c.created_at, d.c.finished_at
        ).where(d.c.job_id == job_id)
    ).first()
    if row is None:
        return None
    attempts = tuple(
        AttemptRecord(
            r.attempt,
            as_utc(r.at),  # type: ignore[arg-type]
            r.status_code,
            r.error,
            r.duration_ms,
        )
        for r in conn.execute(
            select(a.c.attempt, a.c.at, a.c.status_code, a.c.error, a.c.duration_ms)
            .where(a.c.delivery_id == row.id)
            .order_by(a.c.attempt)
        )
    )
    return DeliveryRecord(
        row.id,
        row.url,
        row.status,
        as_utc(row.next_attempt_at) if row.status == _PENDING else None,
        as_utc(row.created_at),  # type: ignore[arg-type]
        as_utc(row.finished_at),
        attempts,
    )


def purge_deliveries(conn: Connection, job_ids: Sequence[str]) -> None:
    """Delete the deliveries of purged jobs, with their attempts."""
    d = webhook_deliveries
    ids = select(d.c.id).where(d.c.job_id.in_(job_ids)).scalar_subquery()
    conn.execute(delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(ids)))
    conn.execute(delete(d).where(d.c.job_id.in_(job_ids)))
