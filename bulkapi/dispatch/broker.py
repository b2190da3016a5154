"""The Dramatiq broker: Redis in production, an in-process stub when embedded."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from bulkapi.config import Settings


def build_broker(settings: Settings) -> dramatiq.Broker:
    """Build the broker and make it the global one before any actor is declared.

    ``dramatiq.actor`` binds the global broker when it runs and silently creates a
    localhost Redis broker if none is set, so this must come first.
    """
    broker: dramatiq.Broker
    if settings.broker_url is None:
        broker = StubBroker()
    else:
        broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=settings.broker_url, namespace=settings.broker_namespace
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
