"""The pace of repeated looks: the long poll, the event stream and waiting sync writes."""

from __future__ import annotations

import pytest

from bulkapi import polling
from bulkapi.polling import Poll


def test_delays_double_from_the_first_up_to_the_longest() -> None:
    poll = Poll(60.0, 0.5, first=0.05)
    assert [poll.next_delay() for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]


def test_a_cap_shortens_one_delay_without_slowing_the_pace() -> None:
    poll = Poll(60.0, 1.0, first=0.05)
    assert poll.next_delay(cap=0.01) == 0.01
    assert poll.next_delay() == 0.1


class _Clock:
    """A clock that moves only when slept on: the test reads every delay exactly."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_no_delay_runs_past_the_deadline_and_none_starts_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    monkeypatch.setattr(polling.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(polling.time, "sleep", clock.sleep)
    poll = Poll(0.03, 1.0, first=0.5)
    while poll.sleep():
        pass
    assert clock.slept == [pytest.approx(0.03)]
    assert poll.remaining() == 0.0
    assert not Poll(0.0).sleep()
