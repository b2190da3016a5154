"""Draining a partition batch by batch, within a time budget, then settling jobs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import Engine

from bulkapi.store.database import utcnow
from bulkapi.store.drain import Apply, drain_batch
from bulkapi.store.jobs import settle


class DrainState(Enum):
    #: Another worker holds the partition: try again shortly (it may be just finishing).
    BUSY = "busy"
    #: Nothing pending was left when this drain looked.
    EMPTY = "empty"
    #: The budget ran out with work left: send another wake-up and let others run.
    MORE = "more"


@dataclass(frozen=True, slots=True)
class Drained:
    state: DrainState
    #: Side effects recorded by the batches of this drain.
    effects: int = 0


@dataclass(frozen=True)
class PartitionDrainer:
    engine: Engine
    batch_size: int
    budget_seconds: float
    apply: Apply

    def drain(self, partition: int) -> Drained:
        deadline = time.monotonic() + self.budget_seconds
        effects = 0
        while True:
            with self.engine.begin() as conn:
                result = drain_batch(conn, partition, self.batch_size, utcnow(), self.apply)
            if not result.locked:
                return Drained(DrainState.BUSY, effects)
            effects += result.effects
            if result.jobs:
                with self.engine.begin() as conn:
                    settle(conn, result.jobs, utcnow())
            if result.finished < self.batch_size:
                return Drained(DrainState.EMPTY, effects)
            if time.monotonic() >= deadline:
                return Drained(DrainState.MORE, effects)
