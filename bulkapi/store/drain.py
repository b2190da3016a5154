"""Draining one partition: apply a batch of pending operations in per-key order, once.

Exactly-once comes from doing three things in one transaction: the resource change,
the operation's move out of ``pending`` and the job counter. Order comes from the
per-key sequence numbers: a batch holds, for every key in it, that key's lowest pending
operations (lower sequence numbers are committed first, and id order follows commit
order per key), and they are applied in sequence order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from bulkapi.core.apply import Outcome, ResourceState
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpError, OpKind, OpStatus
from bulkapi.store.bulk_sql import OperationOutcome, ResourceWrite, bulk_sql_for
from bulkapi.store.database import as_utc, dialect_insert, is_postgres
from bulkapi.store.effects import AppliedChange, operation_id, record_effects
from bulkapi.store.tables import job_counts, jobs, operations

#: How a drain applies one write (the operator's rules included).
Apply = Callable[[ResourceState, Operation], Outcome]

_EXPIRED = "The job's deadline passed before this operation's turn."

#: Tenants served per batch; the rest wait for the next batch (oldest first).
MAX_TENANTS_PER_BATCH = 8

#: First half of the PostgreSQL advisory-lock key for partitions ("bu").
PARTITION_LOCK_SPACE = 0x6275


@dataclass(frozen=True, slots=True)
class BatchResult:
    #: False when another worker holds the partition; nothing was read.
    locked: bool
    #: Operations that left ``pending`` in this batch.
    finished: int = 0
    jobs: frozenset[str] = frozenset()
    #: Side effects the batch's changes recorded (to be run after commit).
    effects: int = 0


def lock_partition(conn: Connection, partition: int) -> bool:
    """One drainer per partition at a time. SQLite's BEGIN IMMEDIATE already serializes."""
    if not is_postgres(conn):
        return True
    return bool(
        conn.execute(
            select(func.pg_try_advisory_xact_lock(PARTITION_LOCK_SPACE, partition))
        ).scalar()
    )


def add_counts(conn: Connection, partition: int, counts: dict[str, Counter[str]]) -> None:
    """Add outcome counts to each job's counter row for this partition."""
    if not counts:
        return
    table = job_counts
    insert = dialect_insert(conn, table)
    statement = insert.on_conflict_do_update(
        index_elements=[table.c.job_id, table.c.partition],
        set_={
            name: table.c[name] + insert.excluded[name]
            for name in ("succeeded", "failed", "cancelled")
        },
    )
    conn.execute(
        statement,
        [
            {
                "job_id": job_id,
                "partition": partition,
                "succeeded": tally[OpStatus.SUCCEEDED],
                "failed": tally[OpStatus.FAILED],
                "cancelled": tally[OpStatus.CANCELLED],
            }
            for job_id, tally in sorted(counts.items())
        ],
    )


def _waiting_tenants(conn: Connection, partition: int) -> list[str]:
    """Tenants with pending work in the partition, longest-waiting first."""
    o = operations
    oldest = func.min(o.c.id)
    return list(
        conn.execute(
            select(o.c.tenant_id)
            .where(o.c.partition == partition, o.c.status == OpStatus.PENDING.value)
            .group_by(o.c.tenant_id)
            .order_by(oldest)
            .limit(MAX_TENANTS_PER_BATCH)
        ).scalars()
    )


def _select_batch(conn: Connection, partition: int, batch_size: int) -> list[Any]:
    """Lock the next operations to apply: an equal share for each waiting tenant.

    Within a tenant, the oldest operations (id order) come first, so every key in the
    batch brings its lowest pending sequence numbers. Sharing the batch means a tenant
    with a million queued operations cannot make another tenant's ten wait behind them.
    """
    tenants = _waiting_tenants(conn, partition)
    if not tenants:
        return []
    share = max(1, batch_size // len(tenants))
    o = operations
    columns = (
        o.c.id,
        o.c.job_id,
        o.c.idx,
        o.c.tenant_id,
        o.c.type,
        o.c.rid,
        o.c.seq,
        o.c.op,
        o.c.data,
        o.c.if_version,
        jobs.c.deadline,
    )
    batch: list[Any] = []
    for tenant_id in tenants:
        batch.extend(
            conn.execute(
                select(*columns)
                .join(jobs, jobs.c.id == o.c.job_id)
                .where(
                    o.c.partition == partition,
                    o.c.tenant_id == tenant_id,
                    o.c.status == OpStatus.PENDING.value,
                )
                .order_by(o.c.id)
                .limit(share)
                .with_for_update(of=o)
            ).all()
        )
    return batch


def drain_batch(
    conn: Connection, partition: int, batch_size: int, now: datetime, apply: Apply
) -> BatchResult:
    if not lock_partition(conn, partition):
        return BatchResult(locked=False)
    batch = _select_batch(conn, partition, batch_size)
    if not batch:
        return BatchResult(locked=True)

    bulk = bulk_sql_for(conn)
    keys = sorted({(row.tenant_id, row.type, row.rid) for row in batch})
    states = bulk.lock_resources(conn, keys)

    outcomes: list[OperationOutcome] = []
    applied_changes: list[AppliedChange] = []
    changed: set[tuple[str, str, str]] = set()
    counts: dict[str, Counter[str]] = {}
    for row in sorted(batch, key=lambda row: (row.tenant_id, row.type, row.rid, row.seq)):
        key = (row.tenant_id, row.type, row.rid)
        if row.deadline is not None and as_utc(row.deadline) <= now:  # type: ignore[operator]
            outcomes.append(
                OperationOutcome(
                    row.id, OpStatus.CANCELLED, None, OpError.DEADLINE_EXCEEDED.value, _EXPIRED
                )
            )
            counts.setdefault(row.job_id, Counter())[OpStatus.CANCELLED] += 1
            continue
        operation = Operation(
            OpKind(row.op), ResourceKey(row.type, row.rid), row.data, row.if_version
        )
        outcome = apply(states[key], operation)
        status = OpStatus.SUCCEEDED if outcome.succeeded else OpStatus.FAILED
        if outcome.succeeded:
            if outcome.effects:
                applied_changes.append(
                    AppliedChange(
                        row.tenant_id,
                        operation.key,
                        partition,
                        operation_id(row.job_id, row.idx),
                        row.job_id,
                        row.idx,
                        operation.kind,
                        outcome.state.version,
                        states[key].data,
                        outcome.state.data,
                        outcome.effects,
                    )
                )
            states[key] = outcome.state
            changed.add(key)
        outcomes.append(
            OperationOutcome(
                row.id,
                status,
                outcome.state.version if outcome.succeeded else None,
                outcome.error.value if outcome.error else None,
                outcome.message,
            )
        )
        counts.setdefault(row.job_id, Counter())[status] += 1

    if changed:
        bulk.write_resources(
            conn,
            [ResourceWrite(*key, states[key].version, states[key].data) for key in sorted(changed)],
            now,
        )
    bulk.finish_operations(conn, outcomes, now)
    add_counts(conn, partition, counts)
    recorded = record_effects(conn, applied_changes, now)
    return BatchResult(locked=True, finished=len(batch), jobs=frozenset(counts), effects=recorded)
