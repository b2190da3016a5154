"""The drain actor. Thin: decode the partition, call the drainer, schedule what comes next."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq

from bulkapi.dispatch.drainer import DrainState, PartitionDrainer

#: Queue the drain wake-ups travel on.
DRAIN_QUEUE = "bulkapi-drain"
#: Retries of a failed drain (a database hiccup); the sweeper re-sends wake-ups anyway.
DRAIN_MAX_RETRIES = 10
DRAIN_MIN_BACKOFF_MS = 100
DRAIN_MAX_BACKOFF_MS = 10_000
DRAIN_TIME_LIMIT_MS = 5 * 60 * 1000

WakeFunction = Callable[[int], Any]


def declare_drain_actor(
    broker: dramatiq.Broker, drainer: PartitionDrainer, busy_retry_delay: float
) -> dramatiq.Actor[[int], None]:
    """Declare ``drain_partition`` on ``broker``; every process declares it the same way."""

    def drain_partition(partition: int) -> None:
        state = drainer.drain(partition)
        if state is DrainState.BUSY:
            # The holder may be finishing its last batch right now and miss our work:
            # come back once it has let go, rather than dropping the wake-up.
            actor.send_with_options(args=(partition,), delay=int(busy_retry_delay * 1000))
        elif state is DrainState.MORE:
            actor.send(partition)

    actor: dramatiq.Actor[[int], None] = dramatiq.actor(
        broker=broker,
        actor_name="drain_partition",
        queue_name=DRAIN_QUEUE,
        max_retries=DRAIN_MAX_RETRIES,
        min_backoff=DRAIN_MIN_BACKOFF_MS,
        max_backoff=DRAIN_MAX_BACKOFF_MS,
        time_limit=DRAIN_TIME_LIMIT_MS,
    )(drain_partition)
    return actor
