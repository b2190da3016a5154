"""The one retry delay every retrying part of bulkapi uses."""

from __future__ import annotations

import pytest

from bulkapi.core.backoff import backoff_seconds


def test_backoff_doubles_from_the_first_delay_and_is_capped() -> None:
    assert [backoff_seconds(n, 1.5, 300.0) for n in range(1, 6)] == [1.5, 3.0, 6.0, 12.0, 24.0]
    assert backoff_seconds(40, 1.5, 300.0) == 300.0
    assert backoff_seconds(3, 0, 300.0) == 0


def test_jitter_spreads_the_delay_within_a_quarter_either_way() -> None:
    assert backoff_seconds(1, 4.0, 60.0, 0.5) == 4.0
    assert backoff_seconds(1, 4.0, 60.0, 0.0) == 3.0
    assert backoff_seconds(1, 4.0, 60.0, 0.999999) == pytest.approx(5.0)
    assert backoff_seconds(30, 5.0, 60.0, 0.5) == 60.0
