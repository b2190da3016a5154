"""The lane actors. Thin: decode the partition, do the work, schedule what comes next.

Four lanes, one actor each. Drain wake-ups for small jobs travel on a prompt queue whose
actor has the higher priority, so a tenant's ten operations do not wait behind another
tenant's hundreds of queued partition wake-ups; long drains always continue in the
regular lane. A prompt wake-up names a block of partitions (``drain_group``), drained
together in shared batches: a small job over a hundred keys touches about fifty
partitions with an operation or two each, and a message, a transaction and a settle for
each of them cost far more than the operations. Side effects run in their own lane,
after the drains: they call systems we do not own, and must not hold up the writes.
Webhooks have a lane of their own, last of all: its messages carry no partition (always
0), since any sender may claim any due delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import dramatiq

from bulkapi.dispatch.drainer import DrainHooks, DrainState, PartitionDrainer
from bulkapi.dispatch.lanes import Lane
from bulkapi.dispatch.scheduled import ScheduledFlags

logger = logging.getLogger(__name__)

#: Queue of regular drain wake-ups.
DRAIN_QUEUE = "bulkapi-drain"
#: Queue of wake-ups for small jobs; workers take these first.
PROMPT_DRAIN_QUEUE = "bulkapi-drain-prompt"
#: Queue of side-effect wake-ups.
EFFECTS_QUEUE = "bulkapi-effects"
#: Queue of webhook wake-ups.
WEBHOOKS_QUEUE = "bulkapi-webhooks"
#: Every queue a worker must consume.
WORKER_QUEUES = (DRAIN_QUEUE, PROMPT_DRAIN_QUEUE, EFFECTS_QUEUE, WEBHOOKS_QUEUE)
#: Dramatiq priorities (lower runs first among messages a worker holds).
_PROMPT_PRIORITY = 0
_REGULAR_PRIORITY = 10
_EFFECTS_PRIORITY = 20
_WEBHOOKS_PRIORITY = 30
#: The one "partition" webhook wake-ups name.
WEBHOOKS_SHARD = 0
#: Retries of a failed run (a database hiccup); the sweeper re-sends wake-ups anyway.
MAX_RETRIES = 10
MIN_BACKOFF_MS = 100
MAX_BACKOFF_MS = 10_000
TIME_LIMIT_MS = 5 * 60 * 1000

#: What a wake-up message names: one partition, or several to drain together.
WakeUp = int | list[int]
PartitionActor = dramatiq.Actor[[WakeUp], None]
#: The work behind a lane: run a partition for a while, say how it left it.
PartitionWork = Callable[[int], DrainState]
#: The same for the partitions one wake-up names, drained together.
GroupWork = Callable[[list[int]], dict[int, DrainState]]


def wake_up(partitions: Sequence[int]) -> WakeUp:
    """The message for ``partitions``: a lone partition travels as a plain number."""
    return partitions[0] if len(partitions) == 1 else list(partitions)


def named(message: WakeUp) -> list[int]:
    """The partitions a wake-up names (sent in order: the first one's flag is the
    message's)."""
    return [message] if isinstance(message, int) else message


@dataclass(frozen=True)
class PartitionActors:
    lanes: dict[Lane, PartitionActor]
    flags: ScheduledFlags
    #: Partitions one wake-up of a lane names (unlisted lanes: one). A lane with groups
    #: wakes whole blocks of that many partitions, each starting at a multiple of it.
    group_sizes: Mapping[Lane, int] = field(default_factory=dict)

    def wake(self, lane: Lane, partition: int) -> None:
        """A wake-up on ``lane``, unless one is already queued for the partition."""
        self.wake_all(lane, [partition])

    def wake_all(self, lane: Lane, partitions: Iterable[int]) -> None:
        """``wake`` for each of ``partitions``, in one message per block of the lane's
        group size, each unless one is already queued for the block: one flag per block,
        the flags claimed together. A send that fails is logged and the others still go:
        the sweeper wakes what was missed."""
        size = self.group_sizes.get(lane, 1)
        blocks = sorted({partition - partition % size for partition in partitions})
        for start in self.flags.claim_all(lane, blocks):
            block = range(start, start + size)
            try:
                self.lanes[lane].send(wake_up(block))
            except Exception:
                logger.exception(
                    "could not send a wake-up for partitions %s; the sweeper will", list(block)
                )

    def senders(self) -> dict[Lane, Callable[[Iterable[int]], None]]:
        """Per lane, a function that sends (coalesced) wake-ups for some partitions."""
        return {lane: partial(self.wake_all, lane) for lane in self.lanes}


def declare_partition_actors(
    broker: dramatiq.Broker,
    drainer: PartitionDrainer,
    run_effects: PartitionWork,
    *,
    send_webhooks: PartitionWork,
    busy_retry_delay: float,
    flags: ScheduledFlags,
    drain_group: int = 1,
) -> PartitionActors:
    """Declare every lane on ``broker``; every process declares them the same way.
    A prompt wake-up names a block of ``drain_group`` partitions."""
    actors = PartitionActors({}, flags, {Lane.PROMPT: drain_group})

    def retry_later(partitions: list[int], delay: float) -> None:
        actors.lanes[Lane.REGULAR].send_with_options(
            args=(wake_up(partitions),), delay=int(delay * 1000) + 1
        )

    def drain(partitions: list[int]) -> dict[int, DrainState]:
        return drainer.drain(
            partitions,
            DrainHooks(
                on_effects=lambda effects_partition: actors.wake(Lane.EFFECTS, effects_partition),
                on_webhooks=lambda: actors.wake(Lane.WEBHOOKS, WEBHOOKS_SHARD),
                # Straight to the queue, past the coalescing flag: a wake-up queued now
                # may run before the key is due, and this one must come after.
                on_retry=retry_later,
            ),
        )

    def one_by_one(work: PartitionWork) -> GroupWork:
        return lambda partitions: {partition: work(partition) for partition in partitions}

    def declare(
        lane: Lane, *, actor_name: str, queue: str, priority: int, work: GroupWork, then: Lane
    ) -> None:
        def run(message: WakeUp) -> None:
            partitions = named(message)
            flags.release(lane, partitions[0])  # before looking: later work sends anew
            states = work(partitions)
            busy = any(state is DrainState.BUSY for state in states.values())
            if busy and flags.claim_all(lane, partitions[:1]):
                # The holder may be finishing its last batch right now and miss our
                # work: come back once it has let go, rather than dropping the wake-up.
                # Unless the flag was set again since we cleared it: then a wake-up
                # queued after our look comes instead (and, finding the holder still
                # there, does the same), so bounced wake-ups never pile up.
                actors.lanes[lane].send_with_options(
                    args=(message,), delay=int(busy_retry_delay * 1000)
                )
            more = [p for p in partitions if states[p] is DrainState.MORE]
            if more:
                actors.wake_all(then, more)

        actors.lanes[lane] = dramatiq.actor(
            broker=broker,
            actor_name=actor_name,
            queue_name=queue,
            priority=priority,
            max_retries=MAX_RETRIES,
            min_backoff=MIN_BACKOFF_MS,
            max_backoff=MAX_BACKOFF_MS,
            time_limit=TIME_LIMIT_MS,
        )(run)

    declare(
        Lane.REGULAR,
        actor_name="drain_partition_regular",
        queue=DRAIN_QUEUE,
        priority=_REGULAR_PRIORITY,
        work=drain,
        then=Lane.REGULAR,
    )
    declare(
        Lane.PROMPT,
        actor_name="drain_partition_prompt",
        queue=PROMPT_DRAIN_QUEUE,
        priority=_PROMPT_PRIORITY,
        work=drain,
        then=Lane.REGULAR,
    )
    declare(
        Lane.EFFECTS,
        actor_name="run_partition_effects",
        queue=EFFECTS_QUEUE,
        priority=_EFFECTS_PRIORITY,
        work=one_by_one(run_effects),
        then=Lane.EFFECTS,
    )
    declare(
        Lane.WEBHOOKS,
        actor_name="send_webhooks",
        queue=WEBHOOKS_QUEUE,
        priority=_WEBHOOKS_PRIORITY,
        work=one_by_one(send_webhooks),
        then=Lane.WEBHOOKS,
    )
    return actors
