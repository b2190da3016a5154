"""Side-effect bookkeeping that needs no I/O: statuses, retry delays, summaries."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

#: No retry waits longer than this, however many attempts came before.
MAX_BACKOFF_SECONDS = 300.0


class EffectStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def summary_status(statuses: Iterable[str]) -> EffectStatus | None:
    """One status for an operation's effects: failed if any failed, else pending if any
    is still to run, else succeeded; None when the operation triggered none."""
    seen = set(statuses)
    if not seen:
        return None
    for status in (EffectStatus.FAILED, EffectStatus.PENDING):
        if status.value in seen:
            return status
    return EffectStatus.SUCCEEDED
