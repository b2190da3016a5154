"""Job states, counts and the terminal-status rule."""

from __future__ import annotations

import pytest

from bulkapi.core.jobs import Counts, JobStatus, terminal_status


@pytest.mark.parametrize(
    "counts",
    [Counts(3), Counts(3, succeeded=2), Counts(3, failed=1, cancelled=1), Counts(1, succeeded=0)],
    ids=["nothing-done", "some-succeeded", "some-failed-some-cancelled", "single-pending"],
)
def test_no_terminal_status_while_anything_is_pending(counts: Counts) -> None:
    assert terminal_status(counts) is None


@pytest.mark.parametrize(
    "counts",
    [Counts(3, cancelled=3), Counts(3, succeeded=2, cancelled=1), Counts(3, 1, 1, 1)],
    ids=["all-cancelled", "succeeded-and-cancelled", "one-of-each"],
)
def test_any_cancelled_operation_makes_the_job_cancelled(counts: Counts) -> None:
    assert terminal_status(counts) is JobStatus.CANCELLED


def test_all_succeeded_makes_the_job_succeeded() -> None:
    assert terminal_status(Counts(4, succeeded=4)) is JobStatus.SUCCEEDED


def test_all_failed_makes_the_job_failed() -> None:
    assert terminal_status(Counts(4, failed=4)) is JobStatus.FAILED


def test_some_failed_and_some_succeeded_makes_the_job_partially_succeeded() -> None:
    assert terminal_status(Counts(4, succeeded=3, failed=1)) is JobStatus.PARTIALLY_SUCCEEDED


def test_pending_is_what_is_neither_succeeded_failed_nor_cancelled() -> None:
    counts = Counts(10, succeeded=3, failed=2, cancelled=1)
    assert counts.pending == 4
    assert counts.pending + counts.succeeded + counts.failed + counts.cancelled == counts.total


def test_progress_is_the_share_of_operations_no_longer_pending() -> None:
    assert Counts(8).progress == 0.0
    assert Counts(8, succeeded=1, failed=1).progress == 0.25
    assert Counts(8, succeeded=4, cancelled=4).progress == 1.0


def test_progress_of_an_empty_job_is_complete_not_a_division_by_zero() -> None:
    assert Counts(0).pending == 0
    assert Counts(0).progress == 1.0


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.PROCESSING])
def test_queued_and_processing_are_not_terminal(status: JobStatus) -> None:
    assert not status.is_terminal


@pytest.mark.parametrize(
    "status",
    [
        JobStatus.SUCCEEDED,
        JobStatus.PARTIALLY_SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    ],
)
def test_every_outcome_is_terminal(status: JobStatus) -> None:
    assert status.is_terminal


def test_job_statuses_are_exactly_the_spec_names() -> None:
    assert {status.value for status in JobStatus} == {
        "queued",
        "processing",
        "succeeded",
        "partially_succeeded",
        "failed",
        "cancelled",
    }
