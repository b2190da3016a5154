"""The blocking client against real servers, on both modes: submits streamed and
retried, jobs followed by their event stream, results, cancel, paging, resources."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bulkapi.client import (
    Client,
    DuplicateResource,
    IdempotencyKeyReused,
    Job,
    JobNotFinished,
    NotFound,
    NothingToRetry,
    Resource,
    ResourceBusy,
    RuleRejected,
    Unauthorized,
    ValidationError,
    VersionMismatch,
    WaitTimeout,
)
from tests.client.conftest import Served
from tests.client.transports import (
    BreaksFirstSubmitBody,
    DropsFirstEventStream,
    LosesFirstSubmitAnswer,
    NoEventStream,
    Recording,
)
from tests.support import WAIT_SECONDS, wait_until


def _upserts(count: int, prefix: str = "doc") -> Iterator[dict[str, Any]]:
    for number in range(count):
        yield {"op": "upsert", "type": "doc", "id": f"{prefix}-{number}", "data": {"n": number}}


def _client(served: Served, transport: Recording | None = None) -> Client:
    return Client(served.base_url, served.new_key(), transport=transport)


def test_submit_streams_a_generator_of_ten_thousand_operations(served: Served) -> None:
    recording = Recording()
    with _client(served, recording) as client:
        job = client.submit(_upserts(10_000))
        assert job.total == 10_000 and job.status_token
        (sent,) = recording.to("POST", "/v1/bulk")
        # No length known in advance: the body went out in chunks as it was produced.
        assert sent.request.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in sent.request.headers
        assert sent.request.headers["Content-Type"] == "application/x-ndjson"
        assert job.wait(timeout=WAIT_SECONDS).status == "succeeded"
        assert job.counts["succeeded"] == 10_000 and job.status_token
        last = client.get("doc", "doc-9999")
        assert last.data == {"n": 9999} and last.version == 1


def test_a_submit_whose_answer_was_lost_is_retried_without_a_second_job(served: Served) -> None:
    lossy = LosesFirstSubmitAnswer()
    with _client(served, lossy) as client:
        job = client.submit(_upserts(50))
        first, second = lossy.to("POST", "/v1/bulk")
        assert lossy.lost is not None and lossy.lost.status_code == 202
        assert first.request.headers["Idempotency-Key"] == second.request.headers["Idempotency-Key"]
        assert second.status == 202
        assert job.id == lossy.lost.json()["id"]
        assert [found.id for found in client.jobs()] == [job.id]
        assert job.wait(timeout=WAIT_SECONDS).counts["succeeded"] == 50


def test_a_submit_broken_mid_body_is_sent_again_whole_from_a_generator(served: Served) -> None:
    broken = BreaksFirstSubmitBody()
    with _client(served, broken) as client:
        job = client.submit(_upserts(5_000))  # several chunks: the first one is lost
        assert broken.broken and len(broken.to("POST", "/v1/bulk")) == 2
        assert job.total == 5_000
        assert job.wait(timeout=WAIT_SECONDS).counts["succeeded"] == 5_000
        indexes = [result["index"] for result in job.results()]
        assert indexes == list(range(5_000))


def test_the_same_idempotency_key_returns_the_same_job(served: Served) -> None:
    with _client(served) as client:
        first = client.submit(list(_upserts(3)), idempotency_key="nightly-42")
        again = client.submit(_upserts(3), idempotency_key="nightly-42")
        assert again.id == first.id
        with pytest.raises(IdempotencyKeyReused) as refused:
            client.submit(_upserts(4), idempotency_key="nightly-42")
        assert refused.value.status == 422


def test_submit_with_metadata_deadline_and_callback_sends_a_json_envelope(
    served: Served,
) -> None:
    recording = Recording()
    with _client(served, recording) as client:
        job = client.submit(
            _upserts(3),
            metadata={"source": "crm"},
            deadline=600,
            callback_url="http://127.0.0.1:9/hook",
        )
        (sent,) = recording.to("POST", "/v1/bulk")
        assert sent.request.headers["Content-Type"] == "application/json"
        assert job.data["metadata"] == {"source": "crm"}
        assert job.data["callback_url"] == "http://127.0.0.1:9/hook"
        assert job.data["deadline"] is not None
        ndjson = client.submit(_upserts(2, "other"), deadline=600)
        assert ndjson.data["deadline"] is not None


def test_wait_follows_the_event_stream_and_reports_progress(served: Served) -> None:
    recording = Recording()
    with _client(served, recording) as client:
        job = client.submit(_upserts(2_000))
        seen: list[tuple[str, float, int]] = []
        job.wait(
            timeout=WAIT_SECONDS,
            on_progress=lambda current: seen.append(
                (current.status, current.progress, current.counts["pending"])
            ),
        )
        assert job.status == "succeeded"
        assert recording.to("GET", "/events"), "no event stream was read"
        assert not [e for e in recording.exchanges if "wait" in e.request.url.params]
        assert seen[-1] == ("succeeded", 1.0, 0)
        progress = [value for _, value, _ in seen]
        assert progress == sorted(progress)
        statuses = [status for status, _, _ in seen]
        assert set(statuses[statuses.index("succeeded") :]) == {"succeeded"}


def test_wait_resumes_after_a_dropped_event_stream_from_the_last_event(idle: Served) -> None:
    """No worker runs, so the job is still queued when the first stream is cut; it ends
    (cancelled, from another client) only once the wait has resumed."""
    dropping = DropsFirstEventStream()
    key = idle.new_key()
    with (
        Client(idle.base_url, key, transport=dropping) as client,
        Client(idle.base_url, key) as other,
    ):
        job = client.submit(_upserts(50))

        def cancel_once_resumed() -> None:
            wait_until(lambda: len(dropping.to("GET", "/events")) >= 2, what="a second stream")
            other.job(job.id).cancel()

        canceller = threading.Thread(target=cancel_once_resumed)
        canceller.start()
        try:
            assert job.wait(timeout=WAIT_SECONDS).status == "cancelled"
        finally:
            canceller.join(WAIT_SECONDS)
        streams = dropping.to("GET", "/events")
        assert len(streams) >= 2
        assert "Last-Event-ID" not in streams[0].request.headers
        assert streams[1].request.headers["Last-Event-ID"] == dropping.cut_after[0]


def test_wait_long_polls_where_there_is_no_event_stream(served: Served) -> None:
    recording = NoEventStream()
    with _client(served, recording) as client:
        job = client.submit(_upserts(300))
        assert job.wait(timeout=WAIT_SECONDS).status == "succeeded"
        polls = recording.to("GET", f"/v1/jobs/{job.id}")
        assert polls and all("wait" in poll.request.url.params for poll in polls)


def test_results_are_read_lazily_and_filtered_by_status(served: Served) -> None:
    operations: list[dict[str, Any]] = [
        {"op": "upsert", "type": "doc", "id": "kept", "data": {}},
        {"op": "patch", "type": "doc", "id": "absent-1", "data": {"x": 1}},
        {"op": "upsert", "type": "doc", "id": "kept-2", "data": {}},
        {"op": "delete", "type": "doc", "id": "absent-2"},
    ]
    with _client(served) as client:
        job = client.submit(operations).wait(timeout=WAIT_SECONDS)
        assert job.status == "partially_succeeded"
        failed = job.results(status="failed")
        assert not isinstance(failed, list)
        assert [(r["index"], r["error"]["code"]) for r in failed] == [
            (1, "not_found"),
            (3, "not_found"),
        ]
        assert [r["index"] for r in job.results(status="succeeded")] == [0, 2]
        assert len(list(job.results())) == 4


def test_cancel_stops_what_is_not_applied_and_is_idempotent(idle: Served) -> None:
    with _client(idle) as client:
        job = client.submit(_upserts(100, "cancelled"))
        assert job.cancel().status == "cancelled"
        assert job.counts == {"pending": 0, "succeeded": 0, "failed": 0, "cancelled": 100}
        history = job.data["status_history"]
        again = job.cancel()  # a retried cancel succeeds and changes nothing
        assert again.status == "cancelled" and again.data["status_history"] == history
        assert [result["status"] for result in job.results()] == ["cancelled"] * 100


def test_wait_gives_up_after_its_timeout_and_the_job_goes_on(idle: Served) -> None:
    with _client(idle) as client:
        job = client.submit(_upserts(3, "unapplied"))
        with pytest.raises(WaitTimeout):
            job.wait(timeout=1)
        assert job.refresh().status == "queued"


def test_a_write_behind_pending_bulk_operations_is_busy(idle: Served) -> None:
    with _client(idle) as client:
        job = client.submit(_upserts(1, "held"))
        with pytest.raises(ResourceBusy) as busy:
            client.put("doc", "held-0", {"sync": True})
        assert busy.value.problem["job_id"] == job.id
        assert busy.value.retry_after is not None
        with pytest.raises(ResourceBusy):
            client.put("doc", "held-0", {"sync": True}, wait=1)


def test_jobs_pages_through_every_job_newest_first(served: Served) -> None:
    recording = Recording()
    with _client(served, recording) as client:
        submitted = [client.submit(_upserts(1, f"page-{n}")).id for n in range(5)]
        listed = [job.id for job in client.jobs(page_size=2)]
        assert listed == submitted[::-1]
        assert len(recording.to("GET", "/v1/jobs")) == 3
        assert all(isinstance(job, Job) for job in client.jobs(status="queued"))


def test_resource_reads_and_writes_carry_versions_and_preconditions(served: Served) -> None:
    with _client(served) as client:
        created = client.put("doc", "r1", {"a": 1})
        assert created == Resource("doc", "r1", 1, {"a": 1}, created.updated_at)
        assert client.get("doc", "r1").version == 1
        assert client.put("doc", "r1", {"a": 2}, if_version=1).version == 2
        with pytest.raises(VersionMismatch) as mismatch:
            client.put("doc", "r1", {"a": 3}, if_version=1)
        assert mismatch.value.status == 412 and mismatch.value.code == "version_mismatch"
        patched = client.patch("doc", "r1", {"b": True}, if_version=2)
        assert (patched.version, patched.data) == (3, {"a": 2, "b": True})
        deleted = client.delete("doc", "r1", if_version=3)
        assert (deleted.version, deleted.data) == (4, None)
        with pytest.raises(NotFound):
            client.get("doc", "r1")
        with pytest.raises(NotFound):
            client.patch("doc", "never", {"a": 1})


def test_history_lists_every_version_with_the_write_that_made_it(served: Served) -> None:
    with _client(served) as client:
        client.put("doc", "h-0", {"n": 0})
        job = client.submit([{"op": "patch", "type": "doc", "id": "h-0", "data": {"n": 1}}])
        job.wait(timeout=WAIT_SECONDS)
        client.delete("doc", "h-0")
        history = list(client.history("doc", "h-0", page_size=1))
    assert [(entry["version"], entry["op"]) for entry in history] == [
        (3, "delete"),
        (2, "patch"),
        (1, "upsert"),
    ]
    assert [entry["source"] for entry in history] == [
        "sync",
        {"job_id": job.id, "index": 0},
        "sync",
    ]


def test_a_write_with_wait_applies_after_the_bulk_operations_before_it(served: Served) -> None:
    recording = Recording()
    with _client(served, recording) as client:
        job = client.submit([*_upserts(3_000, "filler"), *_upserts(1, "waited")])
        written = client.put("doc", "waited-0", {"sync": True}, wait=30)
        # Accepted after the bulk upsert, so applied after it: version 2, whatever the timing.
        assert written.version == 2
        (put,) = recording.to("PUT", "/waited-0")
        assert put.request.headers["Prefer"] == "wait=30"
        assert job.wait(timeout=WAIT_SECONDS).status == "succeeded"


def test_problems_become_their_exception_classes(served: Served) -> None:
    with _client(served) as client:
        second_invalid: list[dict[str, Any]] = [
            {"op": "upsert", "type": "doc", "id": "ok", "data": {}},
            {"op": "x"},
        ]
        with pytest.raises(ValidationError) as invalid:
            client.submit(second_invalid)
        assert type(invalid.value) is ValidationError
        assert invalid.value.status == 422 and "1" in (invalid.value.errors or {})
        with pytest.raises(DuplicateResource) as duplicate:
            client.submit([{"op": "delete", "type": "doc", "id": "twice"}] * 2)
        assert duplicate.value.problem["duplicates"][0]["indexes"] == [0, 1]
        with pytest.raises(RuleRejected) as rejected:
            client.put("guarded", "g1", {"reject": True})
        assert rejected.value.code == "rule_rejected" and rejected.value.detail
    with (
        Client(served.base_url, "not-a-key") as stranger,
        pytest.raises(Unauthorized) as unauthorized,
    ):
        stranger.get("doc", "any")
    assert unauthorized.value.problem["status"] == 401


def test_a_status_token_follows_its_own_job_and_nothing_else(served: Served) -> None:
    with _client(served) as client:
        job = client.submit(_upserts(5, "token"))
    assert job.status_token
    with Client(served.base_url, job.status_token) as reader:
        followed = reader.job(job.id).wait(timeout=WAIT_SECONDS)
        assert followed.status == "succeeded"
        assert [result["id"] for result in followed.results()] == [f"token-{n}" for n in range(5)]
        with pytest.raises(Unauthorized):
            reader.get("doc", "token-0")


def test_a_dry_run_checks_everything_and_records_nothing(served: Served) -> None:
    with _client(served) as client:
        verdict = client.dry_run(_upserts(50, "dry"))
        assert verdict["valid"] is True and verdict["total"] == 50
        assert 1 <= verdict["partitions"] <= 50
        with pytest.raises(DuplicateResource):
            client.dry_run([*_upserts(1, "twice"), *_upserts(1, "twice")])
        assert list(client.jobs()) == []
        with pytest.raises(NotFound):
            client.get("doc", "dry-0")


def test_a_retry_runs_the_failed_operations_again_linked_both_ways(served: Served) -> None:
    with _client(served) as client:
        first = client.submit(
            [
                {"op": "upsert", "type": "doc", "id": "r-ok", "data": {"n": 1}},
                {"op": "patch", "type": "doc", "id": "r-later", "data": {"n": 2}},
            ]
        ).wait(timeout=WAIT_SECONDS)
        assert first.status == "partially_succeeded"
        client.put("doc", "r-later", {"n": 0})  # what made the patch fail is fixed
        retried = first.retry(["not_found"]).wait(timeout=WAIT_SECONDS)
        assert retried.status == "succeeded" and retried.total == 1
        assert retried.retry_of == first.id
        assert first.refresh().retried_by == [retried.id]
        assert client.get("doc", "r-later").data == {"n": 2}
        with pytest.raises(NothingToRetry):
            retried.retry()


def test_a_job_names_the_job_it_waits_behind(idle: Served) -> None:
    with _client(idle) as client:
        ahead = client.submit(_upserts(2, "queue"))
        behind = client.submit(_upserts(2, "queue"))
        assert behind.refresh().waiting_on == [{"job_id": ahead.id, "operations": 2}]
        with pytest.raises(JobNotFinished):
            ahead.retry()
