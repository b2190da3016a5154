"""Back-pressure: a per-tenant request rate (the pending-work cap is checked where the
job is written, ``store/admission.py``).

The rate is counted in the process, so a request never waits on the network for it. In
a fleet, ``bulkapi.api.rate_sync`` shares the counts through Redis in the background.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from bulkapi.api.rate_sync import RateSync
from bulkapi.config import Settings
from bulkapi.core.errors import RateLimited
from bulkapi.core.rates import RateCounter, TenantCount, fleet_burst
from bulkapi.dispatch.broker import redis_client

#: What a sync reports of one tenant: (tenant, window, requests not reported yet).
Report = tuple[str, int, int]


class TenantRateLimiter:
    """Counts requests per tenant in this process; ``check`` raises 429 over the rate.

    Counts of past windows are dropped once per window. ``counting`` is set while there
    are counts of the current window, so a sync thread can sleep while nothing is counted.
    """

    def __init__(self, counter: RateCounter | None, clock: Callable[[], float] = time.time) -> None:
        self.counter = counter
        self.counting = threading.Event()
        self._clock = clock
        self._counts: dict[str, TenantCount] = {}
        self._lock = threading.Lock()
        self._pruned_window = -1
        #: Called when a tenant is first counted in a window (starts the sync in this process).
        self.on_new_count: Callable[[], None] | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> TenantRateLimiter:
        """Embedded: one process counts alone. Fleet: counts shared through Redis in the
        background, each process's bucket bounding the overshoot between two exchanges."""
        rate = settings.rate
        if rate is None or settings.broker_url is None:
            return cls(RateCounter(rate, None) if rate else None)
        limiter = cls(RateCounter(rate, fleet_burst(rate, settings.rate_sync_interval)))
        sync = RateSync(
            limiter,
            redis_client(settings.broker_url, settings.redis_timeout),
            f"{settings.broker_namespace}-rate",
            rate.period,
            settings.rate_sync_interval,
        )
        limiter.on_new_count = sync.ensure_running  # the thread starts where requests count
        return limiter

    def check(self, tenant_id: str) -> None:
        """Count one request; raise ``RateLimited`` (429) once the tenant is over its rate."""
        counter = self.counter
        if counter is None:
            return
        now = self._clock()
        window = counter.rate.window(now)
        with self._lock:
            self._prune(window)
            count = self._counts.get(tenant_id)
            if count is None:
                count = self._counts[tenant_id] = counter.fresh(now)
            first = count.fleet == count.unreported == 0 or count.window != window
            if first:
                self.counting.set()
            wait = counter.admit(count, now)
        if first and self.on_new_count is not None:
            self.on_new_count()
        if wait > 0:
            raise RateLimited(
                "Too many requests for this tenant; slow down.", retry_after=max(1, math.ceil(wait))
            )

    def _prune(self, window: int) -> None:
        """Once per window: forget the tenants not counted in it."""
        if window != self._pruned_window:
            self._pruned_window = window
            self._counts = {t: c for t, c in self._counts.items() if c.window >= window}

    def reports(self) -> list[Report]:
        """What a sync must exchange: every tenant counted in the current window.

        Tenants that sent nothing since the last sync are read too, so a process never
        admits against a fleet count older than one sync. Clears ``counting`` when there
        is nothing to exchange.
        """
        if self.counter is None:
            return []
        window = self.counter.rate.window(self._clock())
        with self._lock:
            found = [
                (tenant, count.window, count.unreported)
                for tenant, count in self._counts.items()
                if count.window >= window  # (a request may have read the clock after us)
            ]
            if not found:
                self.counting.clear()
        return found

    def settle(self, reports: list[Report], fleet: list[int]) -> None:
        """Take in the fleet's counts after ``reports`` were added to them."""
        if self.counter is None:
            return
        with self._lock:
            for (tenant, window, sent), total in zip(reports, fleet, strict=True):
                count = self._counts.get(tenant)
                if count is not None:
                    self.counter.settle(count, window, sent, total)
