"""Synchronous single-resource writes: read and lock, plan, write; waiting (if asked)
for accepted bulk work ahead, and retrying crashed operator code with no lock held."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from sqlalchemy import Engine

from bulkapi.applier import Applier
from bulkapi.core.backoff import backoff_seconds
from bulkapi.core.errors import ApplyFailed, ResourceBusy
from bulkapi.core.operations import Operation, OpKind
from bulkapi.core.plan import (
    Applied,
    AppliedChange,
    OperatorCrashed,
    RetryPolicy,
    crash_message,
    plan_write,
)
from bulkapi.core.preconditions import Preconditions
from bulkapi.ids import new_id
from bulkapi.polling import Poll
from bulkapi.store.database import is_postgres, utcnow
from bulkapi.store.resources import (
    StoredResource,
    WriteResult,
    lock_for_write,
    oldest_pending_job,
    write_blind,
    write_state,
)


@dataclass(frozen=True)
class SyncWriter:
    engine: Engine
    decide: Applier
    policy: RetryPolicy
    retry_after: int
    #: Versions of each key kept in its history.
    keep_history: int

    def write(
        self,
        tenant_id: str,
        operation: Operation,
        *,
        partition: int,
        wait_seconds: float,
        preconditions: Preconditions,
    ) -> WriteResult:
        """Apply the write; while bulk operations on the key are pending, wait up to
        ``wait_seconds`` for them, then answer busy (with a Retry-After hint)."""
        poll = Poll(wait_seconds)
        crashes = 0
        while True:
            try:
                return self.write_once(tenant_id, operation, partition, preconditions)
            except ResourceBusy as busy:
                if not poll.sleep():
                    busy.extra["retry_after"] = self.retry_after
                    raise
            except OperatorCrashed as crash:
                crashes += 1
                if crashes >= self.policy.attempts:
                    raise ApplyFailed(crash_message(crash.error, crashes)) from crash.error
                policy = self.policy
                delay = backoff_seconds(
                    crashes, policy.first_backoff, policy.max_backoff, random.random()
                )
                time.sleep(delay)

    def write_once(
        self, tenant_id: str, operation: Operation, partition: int, preconditions: Preconditions
    ) -> WriteResult:
        """One try, in one transaction: read and lock → plan → write."""
        key = operation.key
        now = utcnow()
        with self.engine.begin() as conn:
            if is_postgres(conn) and self.decide.is_blind(operation):
                assert operation.data is not None
                written = write_blind(
                    conn,
                    tenant_id,
                    key,
                    data=operation.data,
                    preconditions=preconditions,
                    now=now,
                    keep_history=self.keep_history,
                )
                if written is not None:
                    version, created, written_at = written
                    stored = StoredResource(key.type, key.id, version, operation.data, written_at)
                    return WriteResult(stored, created=created)
                # Not written: the key is busy or a precondition failed; the general
                # path below reads the row and says which.
            locked = lock_for_write(
                conn, tenant_id, key, now, create=operation.kind is OpKind.UPSERT
            )
            if locked is not None and locked.pending:
                raise ResourceBusy(
                    f"{key.type}/{key.id} has accepted bulk operations not yet applied.",
                    job_id=oldest_pending_job(conn, tenant_id, key) or "",
                )
            current = None if locked is None else locked.state
            outcome = plan_write(current, operation, preconditions, self.decide)
            now = utcnow()  # once locked: a key's versions are stamped in the order made
            created = operation.kind is OpKind.UPSERT and (current is None or not current.exists)
            changes = (
                [
                    AppliedChange(
                        tenant_id,
                        key,
                        partition,
                        new_id("wr"),
                        None,
                        None,
                        operation.kind,
                        outcome.state.version,
                        None if current is None else current.data,
                        outcome.state.data,
                        outcome.effects,
                    )
                ]
                if outcome.effects
                else []
            )
            write_state(
                conn,
                tenant_id,
                key,
                state=outcome.state,
                created=created,
                changes=changes,
                applied=Applied(
                    (tenant_id, key.type, key.id),
                    outcome.state.version,
                    operation.kind,
                    None,
                    None,
                ),
                now=now,
                keep_history=self.keep_history,
            )
        stored = StoredResource(key.type, key.id, outcome.state.version, outcome.state.data, now)
        return WriteResult(stored, created=created, effects=len(outcome.effects))
