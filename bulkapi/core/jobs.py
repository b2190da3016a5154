"""Job states, counts and the rule for a job's terminal status."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    PARTIALLY_SUCCEEDED = "partially_succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self.value not in OPEN_STATUSES


#: The statuses of a job still running, as stored.
OPEN_STATUSES = (JobStatus.QUEUED.value, JobStatus.PROCESSING.value)

#: Where each status sits in a job's life; history is listed in this order.
STATUS_RANK = {status: rank for rank, status in enumerate(JobStatus)}


@dataclass(frozen=True, slots=True)
class Counts:
    total: int
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def pending(self) -> int:
        return self.total - self.succeeded - self.failed - self.cancelled

    @property
    def progress(self) -> float:
        return 1.0 if self.total == 0 else (self.total - self.pending) / self.total


def terminal_status(counts: Counts) -> JobStatus | None:
    """The status a job ends in once nothing is pending, else None.

    Any cancelled operation makes the job ``cancelled`` (someone asked to stop it or its
    deadline ran out); otherwise failures decide between the three outcomes.
    """
    if counts.pending > 0:
        return None
    if counts.cancelled:
        return JobStatus.CANCELLED
    if counts.failed == 0:
        return JobStatus.SUCCEEDED
    if counts.succeeded == 0:
        return JobStatus.FAILED
    return JobStatus.PARTIALLY_SUCCEEDED
