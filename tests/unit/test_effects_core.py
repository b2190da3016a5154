"""Pure side-effect bookkeeping: the per-operation summary."""

from __future__ import annotations

import pytest

from bulkapi.core.effects import EffectStatus, summary_status


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
