"""Admission: the job, its operations and their per-key sequence numbers, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from bulkapi.core.jobs import JobStatus
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpStatus
from bulkapi.ids import digest, new_id, new_secret
from bulkapi.store.database import dialect_insert
from bulkapi.store.tables import job_status_history, jobs, operations, resources

#: Keys per sequence-allocation statement (7 bound values each, well under both limits).
SEQUENCE_CHUNK = 1000


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


def allocate_sequences(
    conn: Connection, tenant_id: str, keys: Sequence[ResourceKey], now: datetime
) -> dict[ResourceKey, int]:
    """Hand each key its next sequence number, creating placeholder rows for new keys.

    Keys are locked in one global (sorted) order, so two admissions over overlapping keys
    wait for each other instead of deadlocking. The row lock is held until commit, which
    is what makes sequence order equal commit order for each key.
    """
    table = resources
    allocated: dict[ResourceKey, int] = {}
    ordered = sorted(keys)
    for start in range(0, len(ordered), SEQUENCE_CHUNK):
        chunk = ordered[start : start + SEQUENCE_CHUNK]
        insert = dialect_insert(conn, table).values(
            [
                {
                    "tenant_id": tenant_id,
                    "type": key.type,
                    "rid": key.id,
                    "version": 0,
                    "admitted_seq": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for key in chunk
            ]
        )
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.tenant_id, table.c.type, table.c.rid],
            set_={"admitted_seq": table.c.admitted_seq + 1},
        ).returning(table.c.type, table.c.rid, table.c.admitted_seq)
        for row in conn.execute(statement):
            allocated[ResourceKey(row.type, row.rid)] = row.admitted_seq
    return allocated


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
    sequences = allocate_sequences(conn, job.tenant_id, [op.key for op in job.operations], now)
    pending = OpStatus.PENDING.value
    conn.execute(
        operations.insert(),
        [
            {
                "job_id": job_id,
                "idx": index,
                "tenant_id": job.tenant_id,
                "type": op.key.type,
                "rid": op.key.id,
                "partition": partition,
                "seq": sequences[op.key],
                "op": op.kind.value,
                "data": op.data,
                "if_version": op.if_version,
                "status": pending,
            }
            for index, (op, partition) in enumerate(
                zip(job.operations, job.partitions, strict=True)
            )
        ],
    )
    return Admitted(job_id, status_token, frozenset(job.partitions))
