"""Pure side-effect bookkeeping: retry delays and the per-operation summary."""

from __future__ import annotations

import pytest

from bulkapi.core.effects import MAX_BACKOFF_SECONDS, EffectStatus, backoff_seconds, summary_status


def test_backoff_doubles_from_the_first_delay_and_is_capped() -> None:
    delays = [backoff_seconds(attempt, 1.5) for attempt in range(1, 6)]
    assert delays == [1.5, 3.0, 6.0, 12.0, 24.0]
    assert backoff_seconds(40, 1.5) == MAX_BACKOFF_SECONDS
    assert backoff_seconds(3, 0) == 0


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], None),
        (["succeeded"], EffectStatus.SUCCEEDED),
        (["succeeded", "pending"], EffectStatus.PENDING),
        (["pending", "failed"], EffectStatus.FAILED),
        (["failed", "succeeded"], EffectStatus.FAILED),
    ],
)
def test_an_operations_effects_summary_reports_the_worst(
    statuses: list[str], expected: EffectStatus | None
) -> None:
    assert summary_status(statuses) is expected
