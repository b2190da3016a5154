"""Per-tenant request rates: the setting's grammar and the counting arithmetic.

A rate ``R/period`` allows R requests per fixed window of the period. One process counts
alone exactly. In a fleet each process counts locally, never asking anyone on a
request, and a background sync adds what it admitted to a shared count per window and
learns the fleet's total; between two syncs a token bucket of the process (capacity
``burst``, refilled at R per period) bounds how far the processes can overshoot
together. The clock is the caller's: every function takes ``now`` in seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

#: Seconds per unit a rate may be written in.
_UNITS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "month": 30 * 86400,
    "year": 365 * 86400,
}
#: "200/second", "10000 per minute", "5/2 seconds", "1/hour".
_GRAMMAR = re.compile(
    r"(?P<limit>[0-9]+)\s*(?:/|\s+per\s+)\s*(?:(?P<count>[0-9]+)\s*)?"
    r"(?P<unit>second|minute|hour|day|month|year)s?",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` requests per fixed window of ``period`` seconds."""

    limit: int
    period: float

    @property
    def per_second(self) -> float:
        return self.limit / self.period

    def window(self, now: float) -> int:
        """The index of the window ``now`` falls in (windows start at multiples of the period)."""
        return math.floor(now / self.period)

    def window_end(self, window: int) -> float:
        return (window + 1) * self.period


def parse_rate(text: str) -> Rate | None:
    """The rate a setting spells; None for an empty one (no limit). ``ValueError`` otherwise."""
    if not text.strip():
        return None
    found = _GRAMMAR.fullmatch(text.strip())
    if found is None:
        raise ValueError(
            f"BULKAPI_RATE_LIMIT must read like '200/second' or '10000 per minute', not {text!r}"
        )
    limit = int(found["limit"])
    count = int(found["count"] or 1)
    if limit < 1 or count < 1:
        raise ValueError(f"BULKAPI_RATE_LIMIT must allow at least 1 request per period: {text!r}")
    return Rate(limit, count * _UNITS[found["unit"].lower()])


@dataclass(slots=True)
class TenantCount:
    """One tenant's requests as one process sees them."""

    #: The window counted in.
    window: int
    #: The fleet's count of the window at the last sync, this process's reported share included.
    fleet: int = 0
    #: Requests this process admitted in the window and has not reported yet.
    unreported: int = 0
    #: The token bucket (fleets only): tokens left, and when it was last refilled.
    tokens: float = 0.0
    stamp: float = 0.0


class RateCounter:
    """Admits or refuses a tenant's request from its ``TenantCount``, with no I/O.

    ``burst`` None: the process counts alone (exactly ``rate.limit`` per window). A
    number: the process is one of a fleet, and its token bucket holds that many tokens.
    """

    def __init__(self, rate: Rate, burst: float | None) -> None:
        self.rate = rate
        self.burst = burst

    def fresh(self, now: float) -> TenantCount:
        return TenantCount(self.rate.window(now), tokens=self.burst or 0.0, stamp=now)

    def admit(self, count: TenantCount, now: float) -> float:
        """Count one request: 0.0 if admitted, else the seconds until one may be."""
        window = self.rate.window(now)
        if window != count.window:
            count.window, count.fleet, count.unreported = window, 0, 0
        if count.fleet + count.unreported >= self.rate.limit:
            return self.rate.window_end(window) - now
        if self.burst is not None:
            elapsed = max(0.0, now - count.stamp)
            count.tokens = min(self.burst, count.tokens + elapsed * self.rate.per_second)
            count.stamp = now
            if count.tokens < 1.0:
                return (1.0 - count.tokens) / self.rate.per_second
            count.tokens -= 1.0
        count.unreported += 1
        return 0.0

    @staticmethod
    def settle(count: TenantCount, window: int, sent: int, fleet: int) -> None:
        """A sync added ``sent`` of this process's requests to the shared count of
        ``window``, which then stood at ``fleet``."""
        if count.window != window:
            return  # the window ended meanwhile: its count no longer matters
        count.unreported -= sent
        count.fleet = max(count.fleet, fleet)


def fleet_burst(rate: Rate, sync_interval: float) -> float:
    """Each process's bucket: the share of the rate one sync interval brings (at least 1)."""
    return max(1.0, rate.per_second * sync_interval)
