"""Per-resource ordering: sync writes never jump ahead of accepted bulk work."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest

from tests.api.conftest import assert_problem
from tests.conftest import InProcessApi, Service

#: Delay before drains resume behind a waiting write; the test never asserts on time.
RESUME_AFTER_SECONDS = 0.5
CONCURRENT_WRITERS = 20


@pytest.mark.parametrize(
    ("method", "body"), [("PUT", {"n": 9}), ("PATCH", {"n": 9}), ("DELETE", None)]
)
def test_sync_write_behind_pending_bulk_work_is_resource_busy(
    service: Service, api: InProcessApi, method: str, body: dict[str, int] | None
) -> None:
    api.put("/v1/resources/org/o1", json={"n": 0})
    with service.drains_paused():
        job = api.submit([{"op": "patch", "type": "org", "id": "o1", "data": {"bulk": True}}])
        response = api.request(method, "/v1/resources/org/o1", json=body)
        problem = assert_problem(response, 409, "resource_busy")
        assert problem["job_id"] == job["id"]
        assert int(response.headers["Retry-After"]) >= 1
    api.wait_job(job["id"])
    current = api.get("/v1/resources/org/o1").get_json()
    assert current["version"] == 2
    assert current["data"] == {"n": 0, "bulk": True}


def test_resource_busy_names_the_oldest_job_holding_the_key(
    service: Service, api: InProcessApi
) -> None:
    with service.drains_paused():
        first = api.submit([{"op": "upsert", "type": "org", "id": "o1", "data": {"n": 1}}])
        api.submit([{"op": "patch", "type": "org", "id": "o1", "data": {"m": 2}}])
        response = api.put("/v1/resources/org/o1", json={"n": 3})
        assert assert_problem(response, 409, "resource_busy")["job_id"] == first["id"]


def test_busy_write_is_not_applied_and_other_keys_stay_writable(
    service: Service, api: InProcessApi
) -> None:
    with service.drains_paused():
        job = api.submit([{"op": "upsert", "type": "org", "id": "o1", "data": {"n": 1}}])
        assert_problem(api.put("/v1/resources/org/o1", json={"n": 2}), 409, "resource_busy")
        assert_problem(api.get("/v1/resources/org/o1"), 404, "not_found")
        free = api.put("/v1/resources/org/o2", json={"n": 1})
        assert free.status_code == 201
    api.wait_job(job["id"])
    assert api.get("/v1/resources/org/o1").get_json()["data"] == {"n": 1}


def test_prefer_wait_applies_after_the_pending_bulk_work(
    service: Service, api: InProcessApi
) -> None:
    with ExitStack() as paused:
        paused.enter_context(service.drains_paused())
        job = api.submit([{"op": "upsert", "type": "org", "id": "o1", "data": {"bulk": 1}}])
        resume = threading.Timer(RESUME_AFTER_SECONDS, paused.close)
        resume.start()
        try:
            response = api.patch(
                "/v1/resources/org/o1", json={"sync": 2}, headers={"Prefer": "wait=30"}
            )
        finally:
            resume.join()
    assert response.status_code == 200, response.get_json()
    assert response.headers["ETag"] == '"2"'
    assert response.get_json()["data"] == {"bulk": 1, "sync": 2}
    final = api.wait_job(job["id"])
    assert final["status"] == "succeeded"
    assert api.results(job["id"])[0]["version"] == 1


def test_prefer_wait_that_runs_out_is_still_resource_busy(
    service: Service, api: InProcessApi
) -> None:
    with service.drains_paused():
        job = api.submit([{"op": "upsert", "type": "org", "id": "o1", "data": {"n": 1}}])
        response = api.put("/v1/resources/org/o1", json={"n": 2}, headers={"Prefer": "wait=1"})
        assert assert_problem(response, 409, "resource_busy")["job_id"] == job["id"]
        assert response.headers["Retry-After"]


def test_cancelled_bulk_work_no_longer_holds_the_key(service: Service, api: InProcessApi) -> None:
    with service.drains_paused():
        job = api.submit([{"op": "upsert", "type": "org", "id": "o1", "data": {"n": 1}}])
        assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
        response = api.put("/v1/resources/org/o1", json={"n": 2})
        assert response.status_code == 201
        assert response.get_json()["version"] == 1
    assert api.get("/v1/resources/org/o1").get_json()["data"] == {"n": 2}


def test_concurrent_puts_to_one_key_are_serialized(service: Service, api: InProcessApi) -> None:
    def put(number: int) -> tuple[int, int, str, dict[str, int]]:
        client = InProcessApi(service.app.test_client(), api.key)
        response = client.put("/v1/resources/ctr/c1", json={"writer": number})
        body = response.get_json()
        return response.status_code, body["version"], response.headers["ETag"], body["data"]

    with ThreadPoolExecutor(CONCURRENT_WRITERS) as pool:
        outcomes = list(pool.map(put, range(CONCURRENT_WRITERS)))

    statuses = sorted(status for status, _, _, _ in outcomes)
    assert statuses == [200] * (CONCURRENT_WRITERS - 1) + [201]
    versions = sorted(version for _, version, _, _ in outcomes)
    assert versions == list(range(1, CONCURRENT_WRITERS + 1))
    assert all(etag == f'"{version}"' for _, version, etag, _ in outcomes)
    last = next(data for _, version, _, data in outcomes if version == CONCURRENT_WRITERS)
    current = api.get("/v1/resources/ctr/c1").get_json()
    assert current["version"] == CONCURRENT_WRITERS
    assert current["data"] == last


def test_concurrent_patches_to_one_key_lose_no_update(service: Service, api: InProcessApi) -> None:
    api.put("/v1/resources/ctr/c1", json={})

    def patch(number: int) -> tuple[int, int]:
        client = InProcessApi(service.app.test_client(), api.key)
        response = client.patch("/v1/resources/ctr/c1", json={f"f{number}": number})
        return response.status_code, response.get_json()["version"]

    with ThreadPoolExecutor(CONCURRENT_WRITERS) as pool:
        outcomes = list(pool.map(patch, range(CONCURRENT_WRITERS)))

    assert {status for status, _ in outcomes} == {200}
    assert sorted(version for _, version in outcomes) == list(range(2, CONCURRENT_WRITERS + 2))
    current = api.get("/v1/resources/ctr/c1").get_json()
    assert current["version"] == CONCURRENT_WRITERS + 1
    assert current["data"] == {f"f{number}": number for number in range(CONCURRENT_WRITERS)}


def test_bulk_operations_on_one_key_apply_in_admission_order_across_jobs(
    service: Service, api: InProcessApi
) -> None:
    api.put("/v1/resources/seq/s1", json={"trail": []})
    with service.drains_paused():
        jobs = [
            api.submit([{"op": "upsert", "type": "seq", "id": "s1", "data": {"step": step}}])
            for step in range(5)
        ]
        jobs.append(
            api.submit([{"op": "patch", "type": "seq", "id": "s1", "data": {"last": True}}])
        )
    versions = []
    for job in jobs:
        assert api.wait_job(job["id"])["status"] == "succeeded"
        versions.append(api.results(job["id"])[0]["version"])
    assert versions == [2, 3, 4, 5, 6, 7]
    current = api.get("/v1/resources/seq/s1").get_json()
    assert current["version"] == 7
    assert current["data"] == {"step": 4, "last": True}


def test_bulk_and_sync_writes_interleave_in_acceptance_order(
    service: Service, api: InProcessApi
) -> None:
    first = api.submit([{"op": "upsert", "type": "seq", "id": "s1", "data": {"from": "bulk1"}}])
    api.wait_job(first["id"])
    synced = api.patch("/v1/resources/seq/s1", json={"sync": True}, headers={"Prefer": "wait=30"})
    assert synced.get_json()["version"] == 2
    second = api.submit([{"op": "patch", "type": "seq", "id": "s1", "data": {"from": "bulk2"}}])
    api.wait_job(second["id"])
    assert api.results(second["id"])[0]["version"] == 3
    assert api.get("/v1/resources/seq/s1").get_json()["data"] == {"from": "bulk2", "sync": True}


def test_bulk_write_to_a_deleted_resource_continues_its_versions(api: InProcessApi) -> None:
    api.put("/v1/resources/seq/s1", json={"a": 1})
    api.delete("/v1/resources/seq/s1")
    job = api.submit([{"op": "upsert", "type": "seq", "id": "s1", "data": {"b": 2}}])
    api.wait_job(job["id"])
    assert api.results(job["id"])[0]["version"] == 3
    assert api.get("/v1/resources/seq/s1").headers["ETag"] == '"3"'
