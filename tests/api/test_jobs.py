"""Jobs: lifecycle, terminal statuses, results, listing, long poll and cancel."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from bulkapi.dispatch.sweeper import sweep_once
from tests.api.conftest import (
    assert_counts_add_up,
    assert_job_representation,
    assert_problem,
    drains_held,
    ids_in_distinct_partitions,
    parse_time,
    partition,
)
from tests.conftest import InProcessApi, Service

#: Long-poll length used where the job becomes terminal long before it runs out.
LONG_POLL_SECONDS = 60


def _upsert(rid: str, **extra: Any) -> dict[str, Any]:
    return {"op": "upsert", "type": "acct", "id": rid, "data": {"rid": rid}, **extra}


def _patch(rid: str) -> dict[str, Any]:
    return {"op": "patch", "type": "acct", "id": rid, "data": {"patched": True}}


def _history(job: dict[str, Any]) -> list[str]:
    return [entry["status"] for entry in job["status_history"]]


def _assert_history_in_time_order(job: dict[str, Any]) -> None:
    moments = [parse_time(entry["at"]) for entry in job["status_history"]]
    assert moments == sorted(moments)
    assert moments[0] == parse_time(job["created_at"])
    assert parse_time(job["finished_at"]) == moments[-1]


# --- terminal statuses -------------------------------------------------------------------


def test_job_with_only_successes_ends_succeeded(api: InProcessApi) -> None:
    job = api.submit([_upsert("a"), _upsert("b")])
    final = api.wait_job(job["id"])
    assert final["status"] == "succeeded"
    assert final["counts"] == {"pending": 0, "succeeded": 2, "failed": 0, "cancelled": 0}
    assert final["progress"] == 1.0
    assert_job_representation(final)
    assert parse_time(final["started_at"]) <= parse_time(final["finished_at"])
    assert parse_time(final["created_at"]) <= parse_time(final["started_at"])


def test_job_with_some_failures_ends_partially_succeeded(api: InProcessApi) -> None:
    job = api.submit([_upsert("a"), _patch("absent")])
    final = api.wait_job(job["id"])
    assert final["status"] == "partially_succeeded"
    assert final["counts"] == {"pending": 0, "succeeded": 1, "failed": 1, "cancelled": 0}
    assert_counts_add_up(final)


def test_job_with_only_failures_ends_failed(api: InProcessApi) -> None:
    job = api.submit([_patch("absent-1"), {"op": "delete", "type": "acct", "id": "absent-2"}])
    final = api.wait_job(job["id"])
    assert final["status"] == "failed"
    assert final["counts"] == {"pending": 0, "succeeded": 0, "failed": 2, "cancelled": 0}
    assert final["progress"] == 1.0
    results = api.results(job["id"])
    assert [r["error"]["code"] for r in results] == ["not_found", "not_found"]
    assert all("version" not in r for r in results)
    assert all(r["error"]["message"] for r in results)


def test_cancelled_job_ends_cancelled(service: Service, api: InProcessApi) -> None:
    with service.drains_paused():
        job = api.submit([_upsert("a"), _upsert("b")])
        response = api.post(f"/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 202
        cancelled = response.get_json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["counts"] == {"pending": 0, "succeeded": 0, "failed": 0, "cancelled": 2}
    assert cancelled["progress"] == 1.0
    # Nothing was applied; whether it was seen as processing is the sweep's business.
    assert _history(cancelled)[0] == "queued"
    assert _history(cancelled)[-1] == "cancelled"
    assert len(set(_history(cancelled))) == len(_history(cancelled))
    # started_at says when the job began processing: never, if it went straight to cancelled.
    assert (cancelled["started_at"] is None) == ("processing" not in _history(cancelled))
    assert_job_representation(cancelled)
    _assert_history_in_time_order(cancelled)
    # Drains have resumed: nothing cancelled is ever applied.
    assert api.wait_job(job["id"])["status"] == "cancelled"
    for result in api.results(job["id"]):
        assert result["status"] == "cancelled"
        assert "version" not in result
    assert_problem(api.get("/v1/resources/acct/a"), 404, "not_found")


# --- history, progress, counts -----------------------------------------------------------


def test_status_history_records_each_transition_once_in_order(api: InProcessApi) -> None:
    job = api.submit([_upsert("a"), _patch("absent")])
    final = api.wait_job(job["id"])
    assert _history(final) == ["queued", "processing", "partially_succeeded"]
    _assert_history_in_time_order(final)
    again = api.get(f"/v1/jobs/{job['id']}").get_json()
    assert again["status_history"] == final["status_history"]


def test_job_stays_queued_until_an_operation_is_applied(
    service: Service, api: InProcessApi
) -> None:
    with drains_held(service):
        job = api.submit([_upsert("a")])
        # A sweep (it runs periodically in every worker) must not start the job either.
        sweep_once(service.runtime.engine, lambda _: None, lambda _: None, timedelta(days=1))
        response = api.get(f"/v1/jobs/{job['id']}")
        current = response.get_json()
        assert current["status"] == "queued"
        assert current["counts"]["pending"] == 1
        assert current["progress"] == 0.0
        assert current["started_at"] is None
        assert _history(current) == ["queued"]
        assert response.headers["Retry-After"]
    assert api.wait_job(job["id"])["status"] == "succeeded"


def test_half_applied_job_is_processing_with_progress(service: Service, api: InProcessApi) -> None:
    first, second = ids_in_distinct_partitions(service, api, "acct", 2)
    with drains_held(service) as drains:
        job = api.submit([_upsert(first), _upsert(second)])
        drains.drain(partition(service, api, "acct", first))
        current = api.get(f"/v1/jobs/{job['id']}").get_json()
        assert current["status"] == "processing"
        assert current["counts"] == {"pending": 1, "succeeded": 1, "failed": 0, "cancelled": 0}
        assert current["progress"] == 0.5
        assert current["started_at"] is not None
        assert current["finished_at"] is None
        assert _history(current) == ["queued", "processing"]
        results = api.results(job["id"])
        assert [r["status"] for r in results] == ["succeeded", "pending"]
        assert results[0]["version"] == 1
    final = api.wait_job(job["id"])
    assert final["status"] == "succeeded"
    assert _history(final) == ["queued", "processing", "succeeded"]
    _assert_history_in_time_order(final)


def test_cancel_keeps_applied_operations_and_cancels_pending_ones(
    service: Service, api: InProcessApi
) -> None:
    first, second, third = ids_in_distinct_partitions(service, api, "acct", 3)
    with drains_held(service) as drains:
        job = api.submit([_upsert(first), _upsert(second), _upsert(third)])
        drains.drain(partition(service, api, "acct", second))
        response = api.post(f"/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 202
        cancelled = response.get_json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["counts"] == {"pending": 0, "succeeded": 1, "failed": 0, "cancelled": 2}
        assert _history(cancelled) == ["queued", "processing", "cancelled"]
        assert cancelled["finished_at"] is not None
    results = api.results(job["id"])
    assert [r["status"] for r in results] == ["cancelled", "succeeded", "cancelled"]
    assert results[1]["version"] == 1
    assert api.get(f"/v1/resources/acct/{second}").get_json()["version"] == 1
    for rid in (first, third):
        assert_problem(api.get(f"/v1/resources/acct/{rid}"), 404, "not_found")
    assert api.get(f"/v1/jobs/{job['id']}").get_json()["counts"] == cancelled["counts"]


def test_cancel_of_a_finished_job_is_job_finished(api: InProcessApi) -> None:
    job = api.submit([_upsert("a")])
    final = api.wait_job(job["id"])
    assert_problem(api.post(f"/v1/jobs/{job['id']}/cancel"), 409, "job_finished")
    assert api.get(f"/v1/jobs/{job['id']}").get_json() == final


def test_cancel_is_idempotent_but_a_job_finished_otherwise_is_job_finished(
    service: Service, api: InProcessApi
) -> None:
    with service.drains_paused():
        job = api.submit([_upsert("a")])
        first = api.post(f"/v1/jobs/{job['id']}/cancel")
        again = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert first.status_code == again.status_code == 202
    assert again.get_json()["status"] == "cancelled"
    assert again.get_json()["status_history"] == first.get_json()["status_history"]
    done = api.submit([_upsert("b")])
    assert api.wait_job(done["id"])["status"] == "succeeded"
    assert_problem(api.post(f"/v1/jobs/{done['id']}/cancel"), 409, "job_finished")


def test_concurrent_cancels_of_one_running_job_all_succeed(
    service: Service, api: InProcessApi
) -> None:
    with service.drains_paused():
        job = api.submit([_upsert(f"c-{n}") for n in range(50)])
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(lambda _: api.post(f"/v1/jobs/{job['id']}/cancel"), range(6)))
    assert [a.status_code for a in answers] == [202] * 6
    final = api.get(f"/v1/jobs/{job['id']}").get_json()
    assert final["status"] == "cancelled"
    assert final["counts"]["cancelled"] == 50


@pytest.mark.parametrize("service", ["postgres"], indirect=True)
def test_cancel_never_waits_for_a_drain_and_the_drain_cancels_what_it_held(
    service: Service, api: InProcessApi
) -> None:
    """A drain holding a job's operations mid-batch does not make a cancel wait: the
    cancel skips them and answers at once; the drain, seeing the cancel, cancels them."""
    rid = "held-by-drain"
    with drains_held(service) as drains:
        job = api.submit([_upsert(rid)])
        assert drains.holder is not None
        # What a drain's first round trip does: the operation rows locked till commit.
        drains.holder.execute(
            text("SELECT id FROM operations WHERE job_id = :job FOR UPDATE"), {"job": job["id"]}
        )
        answer = api.post(f"/v1/jobs/{job['id']}/cancel")
        assert answer.status_code == 202
        assert answer.get_json()["status"] in ("queued", "processing")
        assert answer.get_json()["counts"]["pending"] == 1
        drains.drain(partition(service, api, "acct", rid))
        after = api.get(f"/v1/jobs/{job['id']}").get_json()
    assert after["status"] == "cancelled"
    assert after["counts"] == {"pending": 0, "succeeded": 0, "failed": 0, "cancelled": 1}
    # The key is free again: a sync write applies at once.
    assert api.put(f"/v1/resources/acct/{rid}", json={"n": 1}).status_code == 201


# --- per-operation if_version -----------------------------------------------------------


def test_if_version_that_holds_applies_and_one_that_does_not_fails_alone(
    api: InProcessApi,
) -> None:
    api.put("/v1/resources/acct/held", json={"v": 1})
    api.put("/v1/resources/acct/stale", json={"v": 1})
    api.put("/v1/resources/acct/stale", json={"v": 2})
    job = api.submit(
        [
            _upsert("held", if_version=1),
            _upsert("stale", if_version=1),
            _upsert("new", if_version=0),
            {"op": "patch", "type": "acct", "id": "held2", "data": {}, "if_version": 5},
        ]
    )
    final = api.wait_job(job["id"])
    assert final["status"] == "partially_succeeded"
    results = api.results(job["id"])
    assert [r["status"] for r in results] == ["succeeded", "failed", "succeeded", "failed"]
    assert results[0]["version"] == 2
    assert results[1]["error"]["code"] == "version_mismatch"
    assert results[1]["error"]["message"]
    assert "version" not in results[1]
    assert results[2]["version"] == 1
    assert results[3]["error"]["code"] == "version_mismatch"
    stale = api.get("/v1/resources/acct/stale")
    assert stale.headers["ETag"] == '"2"'
    assert stale.get_json()["data"] == {"v": 2}


def test_if_version_is_checked_at_the_operations_turn(service: Service, api: InProcessApi) -> None:
    api.put("/v1/resources/acct/a", json={"v": 1})
    with service.drains_paused():
        first = api.submit([_upsert("a")])
        second = api.submit([_upsert("a", if_version=2)])
        third = api.submit([_upsert("a", if_version=2)])
    assert api.wait_job(first["id"])["status"] == "succeeded"
    assert api.wait_job(second["id"])["status"] == "succeeded"
    assert api.wait_job(third["id"])["status"] == "failed"
    assert api.results(second["id"])[0]["version"] == 3
    assert api.results(third["id"])[0]["error"]["code"] == "version_mismatch"


# --- results -------------------------------------------------------------------------------


def _mixed_job(api: InProcessApi, size: int) -> dict[str, Any]:
    """A finished job where every third operation (index % 3 == 1) fails."""
    operations = [_patch(f"absent{n}") if n % 3 == 1 else _upsert(f"r{n}") for n in range(size)]
    job = api.submit(operations)
    return api.wait_job(job["id"])


def test_results_page_with_limit_and_cursor_in_request_order(api: InProcessApi) -> None:
    job = _mixed_job(api, 7)
    indexes: list[int] = []
    cursor = None
    pages = 0
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        response = api.get(f"/v1/jobs/{job['id']}/results{query}")
        assert response.status_code == 200
        page = response.get_json()
        assert 0 < len(page["items"]) <= 3
        indexes.extend(item["index"] for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert indexes == list(range(7))
    assert pages == 3


def test_result_carries_op_key_status_and_version(api: InProcessApi) -> None:
    job = _mixed_job(api, 3)
    items = api.get(f"/v1/jobs/{job['id']}/results").get_json()["items"]
    assert items[0] == {
        "index": 0,
        "op": "upsert",
        "type": "acct",
        "id": "r0",
        "status": "succeeded",
        "version": 1,
    }
    assert items[1]["op"] == "patch"
    assert items[1]["status"] == "failed"
    assert items[1]["error"]["code"] == "not_found"
    assert set(items[1]) == {"index", "op", "type", "id", "status", "error"}


def test_results_filter_by_status(api: InProcessApi) -> None:
    job = _mixed_job(api, 7)
    failed = api.get(f"/v1/jobs/{job['id']}/results?status=failed").get_json()
    assert [item["index"] for item in failed["items"]] == [1, 4]
    assert failed["next_cursor"] is None
    succeeded = api.get(f"/v1/jobs/{job['id']}/results?status=succeeded&limit=2").get_json()
    assert [item["index"] for item in succeeded["items"]] == [0, 2]
    rest = api.get(
        f"/v1/jobs/{job['id']}/results?status=succeeded&limit=10&cursor={succeeded['next_cursor']}"
    ).get_json()
    assert [item["index"] for item in rest["items"]] == [3, 5, 6]
    pending = api.get(f"/v1/jobs/{job['id']}/results?status=pending").get_json()
    assert pending == {"items": [], "next_cursor": None}


def test_results_stream_as_ndjson_when_asked(api: InProcessApi) -> None:
    job = _mixed_job(api, 5)
    response = api.get(f"/v1/jobs/{job['id']}/results", headers={"Accept": "application/x-ndjson"})
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    lines = [orjson.loads(line) for line in response.data.splitlines() if line]
    assert lines == api.results(job["id"])
    filtered = api.get(
        f"/v1/jobs/{job['id']}/results?status=failed",
        headers={"Accept": "application/x-ndjson"},
    )
    assert [orjson.loads(line)["index"] for line in filtered.data.splitlines()] == [1, 4]


@pytest.mark.parametrize(
    "query",
    [
        "?cursor=garbage",
        "?cursor=eyJhZnRlciI6ICJ4In0",
        "?status=done",
        "?limit=0",
        "?limit=1001",
    ],
)
def test_results_with_invalid_arguments_is_validation_error(api: InProcessApi, query: str) -> None:
    job = api.submit([_upsert("a")])
    assert_problem(api.get(f"/v1/jobs/{job['id']}/results{query}"), 422, "validation_error")


def test_counts_add_up_at_every_observed_moment(service: Service, api: InProcessApi) -> None:
    ids = ids_in_distinct_partitions(service, api, "acct", 3)
    with drains_held(service) as drains:
        job = api.submit([_upsert(ids[0]), _patch(ids[1]), _upsert(ids[2])])
        assert_counts_add_up(api.get(f"/v1/jobs/{job['id']}").get_json())
        drains.drain(partition(service, api, "acct", ids[1]))
        observed = api.get(f"/v1/jobs/{job['id']}").get_json()
        assert observed["counts"]["failed"] == 1
        assert_counts_add_up(observed)
    final = api.wait_job(job["id"])
    assert_counts_add_up(final)
    statuses = [r["status"] for r in api.results(job["id"])]
    for status in ("succeeded", "failed", "cancelled", "pending"):
        assert final["counts"][status] == statuses.count(status)


# --- listing -------------------------------------------------------------------------------


def _next_millisecond() -> None:
    """Return once the wall clock has moved to a new millisecond (setup, not an assertion)."""
    start = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 == start:
        time.sleep(0.0002)


def test_job_list_is_newest_first_and_paginated(api: InProcessApi) -> None:
    submitted = []
    for n in range(5):
        _next_millisecond()  # job ids order by millisecond only (see the report)
        submitted.append(api.submit([_upsert(f"j{n}")])["id"])
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(f"/v1/jobs{query}").get_json()
        assert len(page["items"]) <= 2
        for item in page["items"]:
            assert_job_representation(item)
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(submitted))


def test_concurrently_submitted_jobs_list_newest_first_by_created_at_too(
    service: Service, api: InProcessApi
) -> None:
    """Id order and ``created_at`` order agree, however submissions interleave."""

    def submit_some(worker: int) -> None:
        client = InProcessApi(service.app.test_client(), api.key)
        for n in range(5):
            client.submit([_upsert(f"w{worker}-{n}")])

    threads = [threading.Thread(target=submit_some, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    listed = api.get("/v1/jobs?limit=100").get_json()["items"]
    assert len(listed) == 30
    created = [parse_time(job["created_at"]) for job in listed]
    assert created == sorted(created, reverse=True)
    for job in listed:
        assert job["status_history"][0]["at"] == job["created_at"]


class _FrozenMillisecond:
    """Stands in for ``time`` in ``bulkapi.ids``: every id is minted in one millisecond."""

    _now = time.time_ns()

    @classmethod
    def time_ns(cls) -> int:
        return cls._now


def test_jobs_created_in_the_same_millisecond_still_list_newest_first(
    api: InProcessApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bulkapi.ids.time", _FrozenMillisecond)
    submitted = [api.submit([_upsert(f"j{n}")])["id"] for n in range(8)]
    monkeypatch.undo()
    listed = [job["id"] for job in api.get("/v1/jobs").get_json()["items"]]
    assert listed == list(reversed(submitted))


def test_job_list_filters_by_status(service: Service, api: InProcessApi) -> None:
    done = api.submit([_upsert("a")])
    failed = api.submit([_patch("absent")])
    with service.drains_paused():
        cancelled = api.submit([_upsert("c")])
        api.post(f"/v1/jobs/{cancelled['id']}/cancel")
    api.wait_job(done["id"])
    api.wait_job(failed["id"])
    later = api.submit([_upsert("d")])
    api.wait_job(later["id"])
    by_status = {
        status: [job["id"] for job in api.get(f"/v1/jobs?status={status}").get_json()["items"]]
        for status in ("succeeded", "failed", "cancelled", "partially_succeeded", "queued")
    }
    assert by_status == {
        "succeeded": [later["id"], done["id"]],
        "failed": [failed["id"]],
        "cancelled": [cancelled["id"]],
        "partially_succeeded": [],
        "queued": [],
    }
    first = api.get("/v1/jobs?status=succeeded&limit=1").get_json()
    assert [job["id"] for job in first["items"]] == [later["id"]]
    rest = api.get(f"/v1/jobs?status=succeeded&cursor={first['next_cursor']}").get_json()
    assert rest == {"items": [api.get(f"/v1/jobs/{done['id']}").get_json()], "next_cursor": None}


@pytest.mark.parametrize(
    "query", ["?status=done", "?cursor=%%%", "?cursor=eyJhZnRlciI6IDF9", "?limit=-1"]
)
def test_job_list_with_invalid_arguments_is_validation_error(api: InProcessApi, query: str) -> None:
    assert_problem(api.get(f"/v1/jobs{query}"), 422, "validation_error")


# --- long poll -----------------------------------------------------------------------------


def test_long_poll_answers_once_the_job_is_terminal(service: Service, api: InProcessApi) -> None:
    with service.drains_paused():
        job = api.submit([_upsert("a")])
        answers: list[dict[str, Any]] = []
        elapsed: list[float] = []

        def poll() -> None:
            started = time.monotonic()
            answers.append(api.get(f"/v1/jobs/{job['id']}?wait={LONG_POLL_SECONDS}").get_json())
            elapsed.append(time.monotonic() - started)

        poller = threading.Thread(target=poll)
        poller.start()
    poller.join()
    assert answers[0]["status"] == "succeeded"
    assert elapsed[0] < LONG_POLL_SECONDS  # it answered when terminal, not when the wait ran out


def test_long_poll_that_runs_out_answers_with_the_current_state(
    service: Service, api: InProcessApi
) -> None:
    with service.drains_paused():
        job = api.submit([_upsert("a")])
        response = api.get(f"/v1/jobs/{job['id']}?wait=1")
        assert response.status_code == 200
        assert response.get_json()["status"] in {"queued", "processing"}
        assert response.get_json()["counts"]["pending"] == 1
        assert response.headers["Retry-After"]


def test_long_poll_of_a_terminal_job_answers_at_once(api: InProcessApi) -> None:
    job = api.submit([_upsert("a")])
    final = api.wait_job(job["id"])
    response = api.get(f"/v1/jobs/{job['id']}?wait={LONG_POLL_SECONDS}")
    assert response.get_json() == final
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize("wait", ["61", "-1", "soon"])
def test_long_poll_with_invalid_wait_is_validation_error(api: InProcessApi, wait: str) -> None:
    job = api.submit([_upsert("a")])
    assert_problem(api.get(f"/v1/jobs/{job['id']}?wait={wait}"), 422, "validation_error")
