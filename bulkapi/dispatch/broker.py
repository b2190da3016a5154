"""The Dramatiq broker: Redis in production, an in-process stub when embedded."""

from __future__ import annotations

from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from bulkapi.config import Settings
from bulkapi.dispatch.scheduled import MemoryFlags, RedisFlags, ScheduledFlags

#: Longest an idle worker waits between polls of a Redis queue (Dramatiq's default: 1 s).
IDLE_POLL_MS = 100


class PromptRedisBroker(RedisBroker):
    """A Redis broker whose idle consumers poll every 100 ms rather than every second.

    Dramatiq's consumers back off up to the worker timeout (1 s, not settable from its
    CLI) when a queue is empty; a small job would wait that long for its first drain.
    """

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        return super().consume(queue_name, prefetch, min(timeout, IDLE_POLL_MS))


def redis_client(url: str, timeout: float) -> redis.Redis:
    """A client whose every connect and command gives up after ``timeout`` seconds.

    redis-py waits forever by default: a Redis that hangs (stopped, half-open network)
    would hang each wake-up send, each readiness check and each rate-limit count with it.
    None of our commands blocks on the server (Dramatiq polls), so a short limit is safe.
    """
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
    )


def build_broker(settings: Settings) -> dramatiq.Broker:
    """Build the broker and make it the global one before any actor is declared.

    ``dramatiq.actor`` binds the global broker when it runs and silently creates a
    localhost Redis broker if none is set, so this must come first.
    """
    broker: dramatiq.Broker
    if settings.broker_url is None:
        broker = StubBroker()
    else:
        broker = PromptRedisBroker(  # type: ignore[no-untyped-call]
            client=redis_client(settings.broker_url, settings.redis_timeout),
            namespace=settings.broker_namespace,
        )
    dramatiq.set_broker(broker)
    return broker


def broker_reachable(broker: dramatiq.Broker) -> bool:
    if isinstance(broker, RedisBroker):
        try:
            return bool(broker.client.ping())
        except Exception:
            return False
    return True


def scheduled_flags(broker: dramatiq.Broker, settings: Settings) -> ScheduledFlags:
    """Wake-up flags where every sender sees them: Redis in fleets, memory when embedded."""
    if isinstance(broker, RedisBroker):
        return RedisFlags(broker.client, settings.broker_namespace)
    return MemoryFlags()
