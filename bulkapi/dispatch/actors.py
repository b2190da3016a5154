"""The drain actors. Thin: decode the partition, call the drainer, schedule what comes next.

Two lanes share one function: wake-ups for small jobs travel on a prompt queue whose
actor has the higher priority, so a tenant's ten operations do not wait behind another
tenant's hundreds of queued partition wake-ups. Long drains always continue in the
regular lane.
"""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq

from bulkapi.dispatch.drainer import DrainState, PartitionDrainer
from bulkapi.dispatch.scheduled import ScheduledFlags

#: Queue of regular drain wake-ups.
DRAIN_QUEUE = "bulkapi-drain"
#: Queue of wake-ups for small jobs; workers take these first.
PROMPT_DRAIN_QUEUE = "bulkapi-drain-prompt"
#: Every queue a worker must consume.
DRAIN_QUEUES = (DRAIN_QUEUE, PROMPT_DRAIN_QUEUE)
#: Dramatiq priorities (lower runs first among messages a worker holds).
_PROMPT_PRIORITY = 0
_REGULAR_PRIORITY = 10
#: Retries of a failed drain (a database hiccup); the sweeper re-sends wake-ups anyway.
DRAIN_MAX_RETRIES = 10
DRAIN_MIN_BACKOFF_MS = 100
DRAIN_MAX_BACKOFF_MS = 10_000
DRAIN_TIME_LIMIT_MS = 5 * 60 * 1000

DrainActor = dramatiq.Actor[[int], None]


@dataclass(frozen=True)
class DrainActors:
    regular: DrainActor
    prompt: DrainActor
    flags: ScheduledFlags

    def wake(self, partition: int) -> None:
        """A regular wake-up, unless one is already queued for the partition."""
        if self.flags.claim("regular", partition):
            self.regular.send(partition)

    def wake_promptly(self, partition: int) -> None:
        """A prompt-lane wake-up, unless one is already queued for the partition."""
        if self.flags.claim("prompt", partition):
            self.prompt.send(partition)


def declare_drain_actors(
    broker: dramatiq.Broker,
    drainer: PartitionDrainer,
    busy_retry_delay: float,
    flags: ScheduledFlags,
) -> DrainActors:
    """Declare both lanes on ``broker``; every process declares them the same way."""
    lanes: dict[str, DrainActor] = {}

    def declare(name: str, queue: str, priority: int) -> DrainActor:
        def drain(partition: int) -> None:
            flags.release(name, partition)  # before looking: later work sends anew
            state = drainer.drain(partition)
            if state is DrainState.BUSY:
                # The holder may be finishing its last batch right now and miss our
                # work: come back once it has let go, rather than dropping the wake-up.
                lanes[name].send_with_options(args=(partition,), delay=int(busy_retry_delay * 1000))
            elif state is DrainState.MORE and flags.claim("regular", partition):
                lanes["regular"].send(partition)

        actor: DrainActor = dramatiq.actor(
            broker=broker,
            actor_name=f"drain_partition_{name}",
            queue_name=queue,
            priority=priority,
            max_retries=DRAIN_MAX_RETRIES,
            min_backoff=DRAIN_MIN_BACKOFF_MS,
            max_backoff=DRAIN_MAX_BACKOFF_MS,
            time_limit=DRAIN_TIME_LIMIT_MS,
        )(drain)
        lanes[name] = actor
        return actor

    return DrainActors(
        regular=declare("regular", DRAIN_QUEUE, _REGULAR_PRIORITY),
        prompt=declare("prompt", PROMPT_DRAIN_QUEUE, _PROMPT_PRIORITY),
        flags=flags,
    )
