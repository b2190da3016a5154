"""Retries of finished jobs: what to run again, and the links between a job and its retries."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from bulkapi.core.errors import JobNotFinished, NotFound, NothingToRetry
from bulkapi.core.jobs import JobStatus
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpKind, OpStatus
from bulkapi.core.retries import CANCELLED
from bulkapi.store.tables import jobs, operations


@dataclass(frozen=True, slots=True)
class RetrySource:
    """The operations of a finished job to run again, in their original order."""

    operations: list[Operation]
    #: Each operation's index in the original job.
    indexes: list[int]
    callback_url: str | None
    metadata: dict[str, Any] | None


def _selected(codes: Collection[str] | None) -> ColumnElement[bool]:
    """The failed and cancelled operations, or those whose error code is one of ``codes``
    (``cancelled``: cancelled by a cancel request, so without an error code)."""
    o = operations
    finished_badly = o.c.status.in_([OpStatus.FAILED.value, OpStatus.CANCELLED.value])
    if codes is None:
        return finished_badly
    wanted: list[ColumnElement[bool]] = [o.c.error_code.in_(sorted(set(codes) - {CANCELLED}))]
    if CANCELLED in codes:
        wanted.append(and_(o.c.status == OpStatus.CANCELLED.value, o.c.error_code.is_(None)))
    return and_(finished_badly, or_(*wanted))


def retry_source(
    conn: Connection, tenant_id: str, job_id: str, codes: Collection[str] | None
) -> RetrySource:
    """What a retry of the tenant's job runs again: ``NotFound``, ``JobNotFinished`` while
    it is queued or processing, ``NothingToRetry`` when no operation matches."""
    job = conn.execute(
        select(jobs.c.status, jobs.c.callback_url, jobs.c.meta).where(
            jobs.c.id == job_id, jobs.c.tenant_id == tenant_id
        )
    ).first()
    if job is None:
        raise NotFound(f"No job {job_id}.")
    if not JobStatus(job.status).is_terminal:
        raise JobNotFinished(f"Job {job_id} is still {job.status}; retry it once it has finished.")
    o = operations
    rows = conn.execute(
        select(o.c.idx, o.c.op, o.c.type, o.c.rid, o.c.data, o.c.if_version)
        .where(o.c.job_id == job_id, _selected(codes))
        .order_by(o.c.idx)
    ).all()
    if not rows:
        raise NothingToRetry(
            f"Job {job_id} has no failed or cancelled operation"
            + ("." if codes is None else f" with the code(s) {', '.join(sorted(codes))}.")
        )
    return RetrySource(
        [
            Operation(OpKind(row.op), ResourceKey(row.type, row.rid), row.data, row.if_version)
            for row in rows
        ],
        [row.idx for row in rows],
        job.callback_url,
        job.meta,
    )
