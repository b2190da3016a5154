"""Admission: the job, its operations and their per-key sequence numbers, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from bulkapi.core.jobs import JobStatus
from bulkapi.core.operations import Operation
from bulkapi.ids import digest, new_id, new_secret
from bulkapi.store.bulk_sql import OperationRow, bulk_sql_for
from bulkapi.store.tables import job_status_history, jobs


@dataclass(frozen=True, slots=True)
class NewJob:
    tenant_id: str
    operations: Sequence[Operation]
    partitions: Sequence[int]
    callback_url: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Admitted:
    job_id: str
    status_token: str
    partitions: frozenset[int]


def admit(conn: Connection, job: NewJob, now: datetime) -> Admitted:
    """Record a validated bulk request; the caller commits, then wakes the partitions."""
    job_id, status_token = new_id("job"), new_secret("jst")
    conn.execute(
        jobs.insert().values(
            id=job_id,
            tenant_id=job.tenant_id,
            status=JobStatus.QUEUED.value,
            total=len(job.operations),
            created_at=now,
            callback_url=job.callback_url,
            meta=job.metadata,
            status_token_hash=digest(status_token),
        )
    )
    conn.execute(
        job_status_history.insert().values(job_id=job_id, status=JobStatus.QUEUED.value, at=now)
    )
    bulk = bulk_sql_for(conn)
    sequences = bulk.allocate_sequences(conn, job.tenant_id, [op.key for op in job.operations], now)
    bulk.insert_operations(
        conn,
        [
            OperationRow(job_id, index, job.tenant_id, op, partition, sequences[op.key])
            for index, (op, partition) in enumerate(
                zip(job.operations, job.partitions, strict=True)
            )
        ],
    )
    return Admitted(job_id, status_token, frozenset(job.partitions))
