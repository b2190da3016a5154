"""Draining a partition batch by batch, within a time budget, then settling jobs.

Each batch is "read and lock → plan → write": the store locks and reads, the pure
planner decides (operator code runs there, with no row lock held), the store writes the
plan and commits. Only the jobs whose last operation in the partition a batch finished
are settled, in one transaction for all of them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from bulkapi.core.plan import Decide, RetryPolicy, plan_batch
from bulkapi.store.database import batch_transaction, single_read, utcnow
from bulkapi.store.drain import read_batch, write_plan
from bulkapi.store.jobs import Settled, finish_jobs, looking_done


class DrainState(Enum):
    #: Another worker holds the partition: try again shortly (it may be just finishing).
    BUSY = "busy"
    #: Another worker holds the partition and looks for work once more after letting go,
    #: so this wake-up has nothing left to do.
    HELD = "held"
    #: Nothing pending was left when this drain looked.
    EMPTY = "empty"
    #: The budget ran out with work left: send another wake-up and let others run.
    MORE = "more"


@dataclass(frozen=True, slots=True)
class BatchResult:
    #: False when another worker holds the partition; nothing was read.
    locked: bool
    #: Operations the batch read (decided or put off).
    read: int = 0
    #: Jobs whose last operation in the partition this batch finished.
    done_jobs: frozenset[str] = frozenset()
    #: Partitions in which the batch recorded side effects (to be run after commit).
    effects: frozenset[int] = frozenset()
    #: When a key put off by a crashed rule may be tried again.
    retry_at: datetime | None = None


def drain_batch(
    conn: Connection,
    partition: int,
    *,
    batch_size: int,
    now: datetime,
    decide: Decide,
    policy: RetryPolicy,
    keep_history: int,
    spill: bool = True,
) -> BatchResult:
    """One batch of ``partition`` on ``conn`` (see ``read_batch`` for ``spill``);
    committed when it returns."""
    batch = read_batch(conn, partition, batch_size, now, spill=spill)
    if batch is None:
        return BatchResult(locked=False)
    if not batch.pending:
        return BatchResult(locked=True)
    plan = plan_batch(
        batch.pending,
        batch.states,
        batch.jobs,
        now=now,
        decide=decide,
        policy=policy,
        jitter=random.random,
    )
    done = write_plan(conn, batch, plan, now, keep_history)
    effects = frozenset(change.partition for change in plan.effects)
    return BatchResult(True, len(batch.pending), frozenset(done), effects, plan.retry_at)


@dataclass(frozen=True)
class DrainHooks:
    """What a drain starts besides itself: a partition's effects after a batch recorded
    some there, webhooks after a settle finished a job with a callback URL, a wake-up
    when a put-off key is due (its delay in seconds)."""

    on_effects: Callable[[int], None] = lambda _partition: None
    on_webhooks: Callable[[], None] = lambda: None
    on_retry: Callable[[float], None] = field(default=lambda _delay: None)


@dataclass(frozen=True)
class PartitionDrainer:
    engine: Engine
    batch_size: int
    budget_seconds: float
    decide: Decide
    policy: RetryPolicy
    #: Versions of each key kept in its history.
    keep_history: int

    def drain(self, partition: int, hooks: DrainHooks) -> DrainState:
        """Apply batches until the partition is empty or the budget is spent."""
        deadline = time.monotonic() + self.budget_seconds
        retry_at: datetime | None = None
        while True:
            with batch_transaction(self.engine) as conn:
                result = drain_batch(
                    conn,
                    partition,
                    batch_size=self.batch_size,
                    now=utcnow(),
                    decide=self.decide,
                    policy=self.policy,
                    keep_history=self.keep_history,
                )
            if not result.locked:
                return DrainState.BUSY
            for effects_partition in sorted(result.effects):
                hooks.on_effects(effects_partition)
            if result.done_jobs and self._settle(result.done_jobs).webhooks:
                hooks.on_webhooks()
            if result.retry_at is not None:
                retry_at = min(retry_at or result.retry_at, result.retry_at)
            if result.read < self.batch_size or time.monotonic() >= deadline:
                if retry_at is not None:
                    hooks.on_retry(max(0.0, (retry_at - utcnow()).total_seconds()))
                return DrainState.EMPTY if result.read < self.batch_size else DrainState.MORE

    def _settle(self, job_ids: frozenset[str]) -> Settled:
        """Finish the jobs the batch may have finished. Most such questions (a job of many
        partitions is asked after each) find the job still pending elsewhere: they are
        asked alone, and a transaction is opened only to finish."""
        with single_read(self.engine) as conn:
            done = looking_done(conn, job_ids)
        if not done:
            return Settled([])
        with self.engine.begin() as conn:
            return finish_jobs(conn, done, utcnow())
