"""Wake-ups that find their partition held by another worker: never lost, never piling up.

The lanes run on a stub broker whose messages the test hands to the actors itself, so
every bounce is counted, not timed.
"""

from __future__ import annotations

from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, select

from bulkapi.applier import Applier
from bulkapi.core.plan import RetryPolicy
from bulkapi.dispatch.actors import declare_partition_actors
from bulkapi.dispatch.drainer import DrainState, PartitionDrainer
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
