"""At most one pending wake-up per partition and lane.

Without this, a partition busy with a long backlog collects a message per admission
(1,000 small jobs over 64 partitions: 64,000 wake-ups), and every one of them costs a
drain transaction that finds little or nothing. A flag says "a wake-up for this lane and
partition is queued"; senders skip while it is set, and a drain clears it before it
looks for work, so anything committed after the clear sends a fresh wake-up.

The flags are an optimisation only: on any doubt (Redis unreachable) a wake-up is sent,
flags expire on their own, and the sweeper sends without asking them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Protocol

import redis

from bulkapi.dispatch.lanes import Lane

logger = logging.getLogger(__name__)

#: Seconds a flag lives if its wake-up is lost with a crashed worker.
FLAG_TTL_SECONDS = 30


class ScheduledFlags(Protocol):
    def claim_all(self, lane: Lane, partitions: Iterable[int]) -> list[int]:
        """Set the flags; the partitions whose flag was clear, i.e. those to send for."""

    def release(self, lane: Lane, partition: int) -> None:
        """Clear the flag: the wake-up is being handled."""


class MemoryFlags:
    """Embedded mode: one process, so a set will do."""

    def __init__(self) -> None:
        self._set: set[tuple[Lane, int]] = set()
        self._lock = threading.Lock()

    def claim_all(self, lane: Lane, partitions: Iterable[int]) -> list[int]:
        with self._lock:
            clear = [p for p in partitions if (lane, p) not in self._set]
            self._set.update((lane, p) for p in clear)
            return clear

    def release(self, lane: Lane, partition: int) -> None:
        with self._lock:
            self._set.discard((lane, partition))


class RedisFlags:
    """Fleets: the flags live beside the queues, shared by every API and worker process.
    An admission's partitions (about fifty for a hundred keys) are claimed in one round
    trip."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._client = client
        self._prefix = f"{namespace}:scheduled"

    def claim_all(self, lane: Lane, partitions: Iterable[int]) -> list[int]:
        wanted = list(partitions)
        pipe = self._client.pipeline(transaction=False)
        for partition in wanted:
            pipe.set(f"{self._prefix}:{lane}:{partition}", 1, nx=True, ex=FLAG_TTL_SECONDS)
        try:
            answers = pipe.execute()
        except redis.RedisError:
            logger.warning("could not check the wake-up flags; sending anyway", exc_info=True)
            return wanted
        return [p for p, was_clear in zip(wanted, answers, strict=True) if was_clear]

    def release(self, lane: Lane, partition: int) -> None:
        try:
            self._client.delete(f"{self._prefix}:{lane}:{partition}")
        except redis.RedisError:
            logger.warning("could not clear the wake-up flag; it expires", exc_info=True)
