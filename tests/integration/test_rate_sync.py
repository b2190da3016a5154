"""Rate counts shared through a real Redis: what one API process admitted holds back
another, the exchange runs by itself in the background, and losing Redis is logged once
(and its return once) while each process keeps counting on its own."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from bulkapi.api.limits import TenantRateLimiter
from bulkapi.api.rate_sync import RateSync
from bulkapi.core.errors import RateLimited
from bulkapi.core.rates import Rate, RateCounter
from bulkapi.dispatch.broker import redis_client
from tests.support import REDIS_URL, free_port, wait_until

#: Ten requests per hour, counted at one fixed moment: every count falls in one window.
RATE = Rate(10, 3600)
NOW = 1_800_000_000.0
WINDOW = RATE.window(NOW)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    found = redis_client(REDIS_URL, 2.0)
    yield found
    found.close()


def _process(
    client: redis.Redis, namespace: str, background: bool = False
) -> tuple[TenantRateLimiter, RateSync]:
    """One API process's limiter and its sync; the test calls ``exchange`` itself unless
    ``background``."""
    limiter = TenantRateLimiter(RateCounter(RATE, float(RATE.limit)), clock=lambda: NOW)
    sync = RateSync(limiter, client, f"{namespace}-rate", RATE.period, 0.05)
    if background:
        limiter.on_new_count = sync.ensure_running
    return limiter, sync


def _admitted(limiter: TenantRateLimiter, tenant: str, requests: int) -> int:
    admitted = 0
    for _ in range(requests):
        try:
            limiter.check(tenant)
            admitted += 1
        except RateLimited:
            pass
    return admitted


def test_what_one_process_admitted_holds_back_another_after_an_exchange(
    client: redis.Redis, redis_namespace: str
) -> None:
    first, first_sync = _process(client, redis_namespace)
    second, second_sync = _process(client, redis_namespace)
    assert _admitted(first, "t", 7) == 7
    assert first_sync.exchange()
    assert _admitted(second, "t", 1) == 1  # before its first exchange it knows nothing
    assert second_sync.exchange()  # reports 1, learns 8
    assert _admitted(second, "t", 5) == 2
    assert second_sync.exchange()
    assert first_sync.exchange()
    assert _admitted(first, "t", 5) == 0
    assert _admitted(first, "other", 1) == 1  # tenants are counted apart
    keys = sorted(k.decode() for k in client.scan_iter(f"{redis_namespace}-rate:*"))
    assert keys == [f"{redis_namespace}-rate:{WINDOW}:t"]
    assert int(client.get(keys[0]) or 0) == 10
    assert 0 < client.ttl(keys[0]) <= 2 * RATE.period + 1


def test_the_exchange_runs_in_the_background_once_a_tenant_is_counted(
    client: redis.Redis, redis_namespace: str
) -> None:
    limiter, sync = _process(client, redis_namespace, background=True)
    try:
        assert _admitted(limiter, "t", 3) == 3
        key = f"{redis_namespace}-rate:{WINDOW}:t"
        wait_until(lambda: client.get(key) == b"3", timeout=30, what="the count in Redis")
    finally:
        sync.stop()


def test_an_unreachable_redis_is_logged_once_and_its_return_once(
    client: redis.Redis, redis_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    limiter, sync = _process(client, redis_namespace)
    sync.client = redis_client(f"redis://127.0.0.1:{free_port()}/0", 2.0)  # nothing listens
    caplog.set_level(logging.INFO, logger="bulkapi.api.rate_sync")
    assert _admitted(limiter, "t", 4) == 4
    assert [sync.exchange() for _ in range(3)] == [False, False, False]
    assert _admitted(limiter, "t", 10) == 6  # the process still enforces its own count
    sync.client = client
    assert sync.exchange()
    assert sync.exchange()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("rate limits are degraded: enforced per process only")
    assert messages[1] == "rate limits are shared again: the count in Redis is reachable"
    # What the process admitted while Redis was away was reported on its return.
    assert client.get(f"{redis_namespace}-rate:{WINDOW}:t") == b"10"
