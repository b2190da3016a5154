"""Per-tenant rates without Redis or a clock: the grammar, one process counting alone,
the token bucket, and a fleet whose counts meet in a model of the shared store."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings, target
from hypothesis import strategies as st

from bulkapi.api.limits import Report, TenantRateLimiter
from bulkapi.core.errors import RateLimited
from bulkapi.core.rates import Rate, RateCounter, fleet_burst, parse_rate


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("1000/second", Rate(1000, 1)),
        ("200 per second", Rate(200, 1)),
        ("10000/minute", Rate(10000, 60)),
        ("1/hour", Rate(1, 3600)),
        ("5/2 seconds", Rate(5, 2)),
        ("7 per 3 Days", Rate(7, 3 * 86400)),
        ("100/month", Rate(100, 30 * 86400)),
        ("", None),
        ("  ", None),
    ],
)
def test_rates_read_as_written(text: str, rate: Rate | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["1000", "/second", "ten/second", "5/fortnight", "0/minute"])
def test_a_misspelt_rate_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="BULKAPI_RATE_LIMIT"):
        parse_rate(text)


#: Request times (seconds) a hypothesis test sends, in order.
TIMES = st.lists(st.floats(0, 10, allow_nan=False), max_size=200).map(sorted)


@given(times=TIMES, limit=st.integers(1, 20), period=st.sampled_from([0.5, 1.0, 3.0]))
def test_one_process_alone_admits_exactly_the_limit_of_each_window(
    times: list[float], limit: int, period: float
) -> None:
    rate = Rate(limit, period)
    counter = RateCounter(rate, None)
    count = counter.fresh(0.0)
    admitted: Counter[int] = Counter()
    sent: Counter[int] = Counter()
    for now in times:
        sent[rate.window(now)] += 1
        wait = counter.admit(count, now)
        if wait == 0:
            admitted[rate.window(now)] += 1
        else:
            assert wait == pytest.approx(rate.window_end(rate.window(now)) - now)
    for window, requests in sent.items():
        assert admitted[window] == min(requests, limit)


@given(times=TIMES, limit=st.integers(1, 50), interval=st.sampled_from([0.05, 0.1, 0.5]))
def test_the_bucket_admits_at_most_its_burst_plus_the_rate_over_any_span(
    times: list[float], limit: int, interval: float
) -> None:
    rate = Rate(limit, 1.0)
    burst = fleet_burst(rate, interval)
    counter = RateCounter(rate, burst)
    count = counter.fresh(0.0)
    admitted = []
    for now in times:
        if counter.admit(count, now) == 0:
            admitted.append(now)
            count.fleet, count.unreported = 0, 0  # the window's limit is not what this checks
    for first, start in enumerate(admitted):
        for last in range(first, len(admitted)):
            span = admitted[last] - start
            assert last - first + 1 <= burst + rate.per_second * span + 1e-9


def test_a_refusal_says_when_the_bucket_holds_a_token_again() -> None:
    rate = Rate(10, 1.0)  # one token every 0.1 s
    counter = RateCounter(rate, 1.0)
    count = counter.fresh(0.0)
    assert counter.admit(count, 0.0) == 0
    assert counter.admit(count, 0.04) == pytest.approx(0.06)
    assert counter.admit(count, 0.1) == 0


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_answers_429_with_the_seconds_left_in_the_window() -> None:
    clock = FakeClock(10.2)
    limiter = TenantRateLimiter(RateCounter(Rate(2, 1.0), None), clock)
    limiter.check("a")
    limiter.check("a")
    with pytest.raises(RateLimited) as refused:
        limiter.check("a")
    assert refused.value.code == "rate_limited"
    assert refused.value.extra["retry_after"] == 1
    limiter.check("b")  # other tenants have their own count
    clock.now = 11.0
    limiter.check("a")


def test_without_a_rate_nothing_is_counted() -> None:
    limiter = TenantRateLimiter(None)
    for _ in range(100):
        limiter.check("a")
    assert limiter.reports() == []


def test_a_fleet_count_learned_at_a_sync_holds_back_this_process() -> None:
    clock = FakeClock(5.0)
    limiter = TenantRateLimiter(RateCounter(Rate(10, 1.0), 10.0), clock)
    limiter.check("a")
    reports = limiter.reports()
    assert reports == [("a", 5, 1)]
    limiter.settle(reports, [9])  # the other processes admitted 8
    limiter.check("a")
    with pytest.raises(RateLimited):
        limiter.check("a")
    assert limiter.reports() == [("a", 5, 1)]


def test_counts_of_a_window_that_ended_are_neither_reported_nor_settled() -> None:
    clock = FakeClock(5.0)
    limiter = TenantRateLimiter(RateCounter(Rate(10, 1.0), 10.0), clock)
    limiter.check("a")
    reports = limiter.reports()
    clock.now = 6.0
    limiter.settle(reports, [10])  # the old window's total must not block the new one
    limiter.check("a")
    assert limiter.reports() == [("a", 6, 1)]
    assert not limiter.counting.is_set() or limiter.reports()
    clock.now = 7.5
    assert limiter.reports() == []
    assert not limiter.counting.is_set()  # nothing to exchange: the sync may sleep


# --- a fleet ----------------------------------------------------------------------------


@dataclass
class Process:
    """One API process: its limiter, and the exchange it has in flight (if any)."""

    limiter: TenantRateLimiter
    in_flight: tuple[list[Report], list[int], float] | None = None
    #: Longest time from one exchange's report to the next exchange's settle.
    longest: float = 0.0
    last_report: float = 0.0


@dataclass
class Fleet:
    """Processes whose counts meet in a dict standing in for Redis."""

    rate: Rate
    clock: FakeClock
    processes: list[Process]
    shared: Counter[tuple[str, int]] = field(default_factory=Counter)
    admitted: Counter[int] = field(default_factory=Counter)

    @classmethod
    def of(cls, processes: int, rate: Rate, interval: float) -> Fleet:
        """``processes`` processes on one clock, each with the bucket of ``interval``."""
        clock = FakeClock()
        counter = RateCounter(rate, fleet_burst(rate, interval))
        return cls(
            rate, clock, [Process(TenantRateLimiter(counter, clock)) for _ in range(processes)]
        )

    def request(self, p: Process) -> None:
        try:
            p.limiter.check("t")
        except RateLimited:
            return
        self.admitted[self.rate.window(self.clock.now)] += 1

    def report(self, p: Process) -> None:
        """Snapshot and INCRBY (one moment); the answer arrives at ``settle``."""
        reports = p.limiter.reports()
        totals = []
        for tenant, window, sent in reports:
            self.shared[tenant, window] += sent
            totals.append(self.shared[tenant, window])
        p.in_flight = (reports, totals, self.clock.now)

    def settle(self, p: Process) -> None:
        assert p.in_flight is not None
        reports, totals, _ = p.in_flight
        p.limiter.settle(reports, totals)
        p.longest = max(p.longest, self.clock.now - p.last_report)
        p.last_report = p.in_flight[2]
        p.in_flight = None


#: (process index, action, seconds after the previous event, requests sent).
EVENTS = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(["request", "request", "report", "settle"]),
        st.floats(0, 0.2, allow_nan=False),
        st.integers(1, 30),
    ),
    max_size=120,
)


@settings(max_examples=500, deadline=None)
@given(
    events=EVENTS,
    processes=st.integers(1, 4),
    limit=st.integers(1, 40),
    interval=st.sampled_from([0.05, 0.1, 0.3]),
)
def test_a_fleet_overshoots_a_window_by_at_most_one_bucket_and_one_exchange_per_other_process(
    events: list[tuple[int, str, float, int]], processes: int, limit: int, interval: float
) -> None:
    """The bound docs/operations.md states: per window, at most R + (N - 1) x (b + R x D / W)
    requests, b the bucket, D the longest time from a process's report to the settle of
    its next exchange (measured here, including the exchange in flight at the end)."""
    rate = Rate(limit, 1.0)
    fleet = Fleet.of(processes, rate, interval)
    clock = fleet.clock
    for index, action, elapsed, requests in events:
        clock.now += elapsed
        p = fleet.processes[index % processes]
        if action == "request":
            for _ in range(requests):
                fleet.request(p)
        elif action == "report" and p.in_flight is None:
            fleet.report(p)
        elif action == "settle" and p.in_flight is not None:
            fleet.settle(p)
    longest = max(max(p.longest, clock.now - p.last_report) for p in fleet.processes)
    per_process = fleet_burst(rate, interval) + rate.per_second * longest
    bound = max(limit, per_process) + (processes - 1) * per_process
    target(max(fleet.admitted.values(), default=0) / bound)
    for window, admitted in fleet.admitted.items():
        assert admitted <= math.floor(bound + 1e-9), (window, admitted, bound)


def _greedy_fleet(processes: int, rate: Rate, interval: float, sync: bool) -> Fleet:
    """Every process sends a request every millisecond for 5 windows and, if ``sync``,
    exchanges its counts every ``interval`` (each exchange taking a millisecond)."""
    fleet = Fleet.of(processes, rate, interval)
    clock = fleet.clock
    step = 0.001
    for tick in range(round(5 * rate.period / step)):
        clock.now = tick * step
        for p in fleet.processes:
            if p.in_flight is not None:
                fleet.settle(p)
            fleet.request(p)
            if sync and tick % round(interval / step) == 0:
                fleet.report(p)
    return fleet


@pytest.mark.parametrize("processes", [2, 4])
def test_under_full_load_a_syncing_fleet_admits_the_rate_within_the_stated_bound(
    processes: int,
) -> None:
    rate, interval = Rate(200, 1.0), 0.1
    fleet = _greedy_fleet(processes, rate, interval, sync=True)
    per_process = fleet_burst(rate, interval) + rate.per_second * (interval + 0.001)
    for window in range(5):
        assert rate.limit <= fleet.admitted[window] <= rate.limit + (processes - 1) * per_process


def test_without_syncs_each_process_would_admit_the_whole_rate() -> None:
    """What the exchanges prevent: the same load, no sync, about N times the rate."""
    rate = Rate(200, 1.0)
    fleet = _greedy_fleet(4, rate, 0.1, sync=False)
    assert all(fleet.admitted[window] >= 3 * rate.limit for window in range(5))
