"""Draining a partition batch by batch, within a time budget, then settling jobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import Engine

from bulkapi.store.database import utcnow
from bulkapi.store.drain import Apply, drain_batch
from bulkapi.store.jobs import settle


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


@dataclass(frozen=True)
class PartitionDrainer:
    engine: Engine
    batch_size: int
    budget_seconds: float
    apply: Apply

    def drain(
        self,
        partition: int,
        on_effects: Callable[[], None],
        on_webhooks: Callable[[], None] = lambda: None,
    ) -> DrainState:
        """Apply batches until the partition is empty or the budget is spent;
        ``on_effects`` runs after every batch that recorded side effects, ``on_webhooks``
        after every settle that finished a job with a callback URL."""
        deadline = time.monotonic() + self.budget_seconds
        while True:
            with self.engine.begin() as conn:
                result = drain_batch(conn, partition, self.batch_size, utcnow(), self.apply)
            if not result.locked:
                return DrainState.BUSY
            if result.effects:
                on_effects()
            if result.jobs:
                with self.engine.begin() as conn:
                    settled = settle(conn, result.jobs, utcnow())
                if settled.webhooks:
                    on_webhooks()
            if result.finished < self.batch_size:
                return DrainState.EMPTY
            if time.monotonic() >= deadline:
                return DrainState.MORE
