"""Wake-ups that find their partition held by another worker: never lost, never piling up.

The lanes run on a stub broker whose messages the test hands to the actors itself, so
every bounce is counted, not timed.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, select

from bulkapi.applier import Applier
from bulkapi.core.plan import RetryPolicy
from bulkapi.dispatch.actors import declare_partition_actors
from bulkapi.dispatch.drainer import DrainHooks, DrainState, PartitionDrainer
from bulkapi.dispatch.lanes import Lane
from bulkapi.dispatch.scheduled import MemoryFlags
from bulkapi.registry import TypeRegistry
from bulkapi.store.database import make_engine
from bulkapi.store.drain import PARTITION_LOCK_SPACE
from bulkapi.store.migrate import upgrade
from tests.support import deliver_queued, queued_messages

PARTITION = 5


def test_wakeups_that_find_the_partition_draining_bounce_once_per_lane(
    postgres_url: str,
) -> None:
    """However many admissions wake a partition while another worker drains it, one
    wake-up per lane waits to look after the holder lets go; then it finds the way free."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    broker = StubBroker()
    drainer = PartitionDrainer(engine, 100, 1.0, Applier(TypeRegistry([])), RetryPolicy(), 100)
    actors = declare_partition_actors(
        broker,
        drainer,
        lambda _: DrainState.EMPTY,
        send_webhooks=lambda _: DrainState.EMPTY,
        busy_retry_delay=0.25,
        flags=MemoryFlags(),
    )
    try:
        with engine.connect() as holder:  # another worker's drain, for as long as we like
            holder.execute(select(func.pg_advisory_lock(PARTITION_LOCK_SPACE, PARTITION)))
            holder.commit()
            for _ in range(20):
                for lane in (Lane.PROMPT, Lane.PROMPT, Lane.REGULAR, Lane.PROMPT, Lane.REGULAR):
                    actors.wake(lane, PARTITION)
                deliver_queued(broker)  # every one finds the partition busy
                assert queued_messages(broker) == 2
            holder.execute(select(func.pg_advisory_unlock(PARTITION_LOCK_SPACE, PARTITION)))
            holder.commit()
        deliver_queued(broker)
        assert queued_messages(broker) == 0
    finally:
        broker.close()
        engine.dispose()


def test_prompt_wakeups_name_whole_blocks_and_a_block_with_a_held_partition_bounces_once(
    postgres_url: str,
) -> None:
    """Partitions asked for on the prompt lane travel as blocks of ``drain_group``, one
    message per block however many of its partitions asked; a block one of whose
    partitions another worker holds comes back once, whole, until the holder lets go."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    broker = StubBroker()
    drained: list[list[int]] = []
    drainer = PartitionDrainer(engine, 100, 1.0, Applier(TypeRegistry([])), RetryPolicy(), 100)

    def recording(partitions: list[int], hooks: DrainHooks) -> dict[int, DrainState]:
        drained.append(partitions)
        return drainer.drain(partitions, hooks)

    actors = declare_partition_actors(
        broker,
        cast(PartitionDrainer, SimpleNamespace(drain=recording)),
        lambda _: DrainState.EMPTY,
        send_webhooks=lambda _: DrainState.EMPTY,
        busy_retry_delay=0.25,
        flags=MemoryFlags(),
        drain_group=4,
    )
    try:
        actors.wake_all(Lane.PROMPT, [5, 1, 6, 2, 9])
        actors.wake_all(Lane.PROMPT, [3, 7])  # blocks already queued: nothing new
        assert queued_messages(broker) == 3
        deliver_queued(broker)
        assert sorted(drained) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]

        drained.clear()
        with engine.connect() as holder:
            holder.execute(select(func.pg_advisory_lock(PARTITION_LOCK_SPACE, PARTITION)))
            holder.commit()
            for _ in range(3):
                actors.wake_all(Lane.PROMPT, [PARTITION, 6])
                deliver_queued(broker)
                assert queued_messages(broker) == 1  # the bounced block, once
            holder.execute(select(func.pg_advisory_unlock(PARTITION_LOCK_SPACE, PARTITION)))
            holder.commit()
        deliver_queued(broker)
        assert queued_messages(broker) == 0
        assert drained == [[4, 5, 6, 7]] * 4
    finally:
        broker.close()
        engine.dispose()
