"""Sharing rate counts across a fleet: each API process's counts meet in Redis.

A background thread adds what this process admitted since its last exchange to one
shared count per tenant and window (``INCRBY``, one pipelined round trip for every
tenant), and reads back the fleet's totals; the limiter admits against those. Requests
never wait on Redis: when it is away or hung, only this thread waits (at most
``BULKAPI_REDIS_TIMEOUT``), backs off, and each process keeps enforcing the rate on its
own count meanwhile. That is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import TYPE_CHECKING

import redis

from bulkapi.core.backoff import backoff_seconds

if TYPE_CHECKING:
    from bulkapi.api.limits import Report, TenantRateLimiter

logger = logging.getLogger(__name__)

#: Longest pause between two attempts while Redis cannot be reached, in seconds.
MAX_RETRY_SECONDS = 5.0


class RateSync:
    """Exchanges ``limiter``'s counts with Redis every ``interval`` seconds while it counts."""

    def __init__(
        self,
        limiter: TenantRateLimiter,
        client: redis.Redis,
        prefix: str,
        period: float,
        interval: float,
    ) -> None:
        self.limiter = limiter
        self.client = client
        self.prefix = prefix
        self.interval = interval
        #: Seconds a window's shared count outlives the window (hosts' clocks differ a little).
        self.ttl = math.ceil(2 * period) + 1
        self.failures = 0
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = threading.Event()
        self._start_lock = threading.Lock()

    def ensure_running(self) -> None:
        """Start the thread in this process (a forked child inherits none)."""
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="bulkapi-rate-sync", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.limiter.counting.set()  # wakes the thread if it sleeps for want of counts
        if self._thread is not None:
            self._thread.join(timeout)

    def exchange(self) -> bool:
        """One exchange of every current count; False if Redis could not be reached."""
        reports = self.limiter.reports()
        if not reports:
            return True
        try:
            totals = self._send(reports)
        except (redis.RedisError, OSError) as error:
            self.failures += 1
            if self.failures == 1:
                logger.warning(
                    "rate limits are degraded: enforced per process only "
                    "(the shared count in Redis is unreachable: %s)",
                    error,
                )
            return False
        if self.failures:
            logger.info("rate limits are shared again: the count in Redis is reachable")
            self.failures = 0
        self.limiter.settle(reports, totals)
        return True

    def _send(self, reports: list[Report]) -> list[int]:
        pipe = self.client.pipeline(transaction=False)
        for tenant, window, sent in reports:
            key = f"{self.prefix}:{window}:{tenant}"
            if sent:
                pipe.incrby(key, sent)
                pipe.expire(key, self.ttl)
            else:
                pipe.get(key)
        replies = iter(pipe.execute())
        totals = []
        for _, _, sent in reports:
            totals.append(int(next(replies) or 0))
            if sent:
                next(replies)  # EXPIRE's answer
        return totals

    def _pause(self) -> float:
        if not self.failures:
            return self.interval
        return backoff_seconds(self.failures, self.interval, MAX_RETRY_SECONDS)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.limiter.counting.wait()
            started = time.monotonic()
            if not self.exchange():
                started = time.monotonic()  # back off from the failure, not from its start
            self._stopping.wait(max(0.0, started + self._pause() - time.monotonic()))
