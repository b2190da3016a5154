"""Draining partitions batch by batch, within a time budget, then settling jobs.

A drain takes one partition, or a few small ones together (a small job's wake-up names
several): their operations share each batch. Each batch is "read and lock → plan →
write": the store locks and reads, the pure planner decides (operator code runs there,
with no row lock held), the store writes the plan and commits. Only the jobs whose last
operation in a partition a batch finished are settled, in one transaction for all of
them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
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
    #: Partitions another worker holds; nothing was read from them.
    busy: frozenset[int] = frozenset()
    #: Partitions that may hold more pending work than the batch took.
    more: frozenset[int] = frozenset()
    #: Operations the batch read (decided or put off).
    read: int = 0
    #: Jobs whose last operation in some partition this batch finished.
    done_jobs: frozenset[str] = frozenset()
    #: Partitions in which the batch recorded side effects (to be run after commit).
    effects: frozenset[int] = frozenset()
    #: When a key put off by a crashed rule may be tried again.
    retry_at: datetime | None = None


def drain_batch(
    conn: Connection,
    partitions: Sequence[int],
    *,
    batch_size: int,
    now: datetime,
    decide: Decide,
    policy: RetryPolicy,
    keep_history: int,
    spill: bool = True,
) -> BatchResult:
    """One batch of ``partitions`` on ``conn`` (see ``read_batch`` for ``spill``);
    committed when it returns."""
    batch = read_batch(conn, partitions, batch_size, now, spill=spill)
    if not batch.pending:
        return BatchResult(batch.busy)
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
    return BatchResult(
        batch.busy,
        frozenset(batch.more),
        len(batch.pending),
        frozenset(done),
        effects,
        plan.retry_at,
    )


@dataclass(frozen=True)
class DrainHooks:
    """What a drain starts besides itself: a partition's effects after a batch recorded
    some there, webhooks after a settle finished a job with a callback URL, a wake-up of
    the drained partitions when a put-off key is due (its delay in seconds)."""

    on_effects: Callable[[int], None] = lambda _partition: None
    on_webhooks: Callable[[], None] = lambda: None
    on_retry: Callable[[list[int], float], None] = field(default=lambda _partitions, _delay: None)


@dataclass(frozen=True)
class PartitionDrainer:
    engine: Engine
    batch_size: int
    budget_seconds: float
    decide: Decide
    policy: RetryPolicy
    #: Versions of each key kept in its history.
    keep_history: int

    def drain(self, partitions: Sequence[int], hooks: DrainHooks) -> dict[int, DrainState]:
        """Apply batches of ``partitions`` together until each is empty, held by another
        worker, or the budget is spent; how each was left."""
        deadline = time.monotonic() + self.budget_seconds
        retry_at: datetime | None = None
        states: dict[int, DrainState] = {}
        active = list(partitions)
        while active:
            with batch_transaction(self.engine) as conn:
                result = drain_batch(
                    conn,
                    active,
                    batch_size=self.batch_size,
                    now=utcnow(),
                    decide=self.decide,
                    policy=self.policy,
                    keep_history=self.keep_history,
                )
            for partition in active:
                if partition in result.busy:
                    states[partition] = DrainState.BUSY
                elif partition not in result.more:
                    states[partition] = DrainState.EMPTY
            active = [p for p in active if p not in states]
            for effects_partition in sorted(result.effects):
                hooks.on_effects(effects_partition)
            if result.done_jobs and self._settle(result.done_jobs).webhooks:
                hooks.on_webhooks()
            if result.retry_at is not None:
                retry_at = min(retry_at or result.retry_at, result.retry_at)
            if active and time.monotonic() >= deadline:
                states.update(dict.fromkeys(active, DrainState.MORE))
                break
        if retry_at is not None:
            hooks.on_retry(sorted(partitions), max(0.0, (retry_at - utcnow()).total_seconds()))
        return states

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
