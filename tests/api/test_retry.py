"""Retries of finished jobs (``POST /v1/jobs/{id}/retry``) on both modes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.conftest import assert_job_representation, assert_problem, strict_types
from tests.conftest import InProcessApi, Service


def _upsert(rid: str, if_version: int | None = None, **data: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"op": "upsert", "type": "acct", "id": rid, "data": data}
    if if_version is not None:
        op["if_version"] = if_version
    return op


def _retry(api: InProcessApi, job_id: str, **kwargs: Any) -> dict[str, Any]:
    response = api.post(f"/v1/jobs/{job_id}/retry", **kwargs)
    assert response.status_code == 202, response.get_json()
    assert response.headers["Location"] == f"/v1/jobs/{response.get_json()['id']}"
    body: dict[str, Any] = response.get_json()
    assert body["retry_of"] == job_id and body["status_token"].startswith("jst_")
    return body


def _outcomes(api: InProcessApi, job_id: str) -> list[tuple[Any, ...]]:
    return [
        (
            r["index"],
            r["op"],
            r["id"],
            r["status"],
            r.get("version"),
            r.get("error", {}).get("code"),
        )
        for r in api.results(job_id)
    ]


def _resource(api: InProcessApi, rid: str) -> tuple[int, dict[str, Any]]:
    body = api.get(f"/v1/resources/acct/{rid}").get_json()
    return body["version"], body["data"]


def test_a_retry_of_a_partially_succeeded_job_applies_exactly_its_failed_operations(
    api: InProcessApi,
) -> None:
    for rid in ("mismatch", "stale"):
        assert api.put(f"/v1/resources/acct/{rid}", json={"v": 1}).status_code == 201
    job = api.submit(
        [
            _upsert("ok", n=1),
            _upsert("mismatch", if_version=3, n=2),
            {"op": "patch", "type": "acct", "id": "absent", "data": {"n": 3}},
            _upsert("stale", if_version=7, n=4),
        ]
    )
    first = api.wait_job(job["id"])
    assert first["status"] == "partially_succeeded"
    assert first["retry_of"] is None and first["retried_by"] == []
    # The downstream state is fixed for two of the three failures.
    api.put("/v1/resources/acct/mismatch", json={"v": 2})
    api.put("/v1/resources/acct/mismatch", json={"v": 3})
    api.put("/v1/resources/acct/absent", json={"m": 0})

    retry = _retry(api, job["id"])
    assert retry["total"] == 3 and retry["retried_by"] == []
    done = api.wait_job(retry["id"])
    assert done["status"] == "partially_succeeded" and done["retry_of"] == job["id"]
    assert_job_representation(done)
    # The original order, new indexes, and each operation's if_version honoured.
    assert _outcomes(api, retry["id"]) == [
        (0, "upsert", "mismatch", "succeeded", 4, None),
        (1, "patch", "absent", "succeeded", 2, None),
        (2, "upsert", "stale", "failed", None, "version_mismatch"),
    ]
    assert _resource(api, "mismatch") == (4, {"n": 2})
    assert _resource(api, "absent") == (2, {"m": 0, "n": 3})
    assert _resource(api, "stale") == (1, {"v": 1})  # never overwritten
    assert _resource(api, "ok") == (1, {"n": 1})  # succeeded the first time: not run again
    assert api.get(f"/v1/jobs/{job['id']}").get_json()["retried_by"] == [retry["id"]]

    # By code: only the not_found one, again; and a retry of the retry.
    again = _retry(api, job["id"], json={"codes": ["not_found"]})
    assert api.wait_job(again["id"])["counts"]["succeeded"] == 1
    assert _outcomes(api, again["id"]) == [(0, "patch", "absent", "succeeded", 3, None)]
    stale = _retry(api, retry["id"], json={"codes": ["version_mismatch", "apply_failed"]})
    assert _outcomes(api, stale["id"])[0][:3] == (0, "upsert", "stale")
    api.wait_job(stale["id"])
    original = api.get(f"/v1/jobs/{job['id']}").get_json()
    assert original["retried_by"] == [retry["id"], again["id"]]  # newest last
    assert api.get(f"/v1/jobs/{retry['id']}").get_json()["retried_by"] == [stale["id"]]
    listed = {item["id"]: item for item in api.get("/v1/jobs").get_json()["items"]}
    assert listed[job["id"]]["retried_by"] == [retry["id"], again["id"]]
    assert listed[stale["id"]]["retry_of"] == retry["id"]
    body = assert_problem(
        api.post(f"/v1/jobs/{job['id']}/retry", json={"codes": ["cancelled", "rule_rejected"]}),
        422,
        "nothing_to_retry",
    )
    assert "cancelled" in body["detail"]


def test_cancelled_operations_are_retried_and_a_running_job_cannot_be(
    service: Service, api: InProcessApi
) -> None:
    with service.drains_paused():
        job = api.submit([_upsert("c1", n=1), _upsert("c2", n=2)])
        assert_problem(api.post(f"/v1/jobs/{job['id']}/retry"), 409, "job_not_finished")
        assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    assert api.wait_job(job["id"])["status"] == "cancelled"
    assert_problem(
        api.post(f"/v1/jobs/{job['id']}/retry", json={"codes": ["deadline_exceeded"]}),
        422,
        "nothing_to_retry",
    )
    retry = _retry(api, job["id"], json={"codes": ["cancelled"]})
    assert api.wait_job(retry["id"])["status"] == "succeeded"
    assert [(r["index"], r["id"]) for r in api.results(retry["id"])] == [(0, "c1"), (1, "c2")]
    assert _resource(api, "c2") == (1, {"n": 2})


def test_a_retry_honours_its_idempotency_key(api: InProcessApi) -> None:
    job = api.submit([{"op": "delete", "type": "acct", "id": "never"}, _upsert("fine")])
    assert api.wait_job(job["id"])["status"] == "partially_succeeded"
    key = {"Idempotency-Key": "retry-1"}
    first = _retry(api, job["id"], json={"codes": ["not_found"]}, headers=key)
    replay = api.post(f"/v1/jobs/{job['id']}/retry", json={"codes": ["not_found"]}, headers=key)
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["id"] == first["id"]
    assert replay.get_json()["status_token"] != first["status_token"]
    assert_problem(
        api.post(f"/v1/jobs/{job['id']}/retry", headers=key), 422, "idempotency_key_reused"
    )
    used = {"Idempotency-Key": "submit-1"}
    assert (
        api.post("/v1/bulk", json={"operations": [_upsert("x")]}, headers=used).status_code == 202
    )
    assert_problem(
        api.post(f"/v1/jobs/{job['id']}/retry", headers=used), 422, "idempotency_key_reused"
    )
    assert api.get(f"/v1/jobs/{job['id']}").get_json()["retried_by"] == [first["id"]]
    api.wait_job(first["id"])


def test_retry_refuses_bad_requests_and_other_callers(service: Service, api: InProcessApi) -> None:
    job = api.submit([{"op": "delete", "type": "acct", "id": "never"}])
    assert api.wait_job(job["id"])["status"] == "failed"
    path = f"/v1/jobs/{job['id']}/retry"
    body = assert_problem(api.post(path, json={"codes": ["nope"]}), 422, "validation_error")
    assert "codes" in body["errors"]
    assert_problem(api.post(path, json={"codes": []}), 422, "validation_error")
    assert_problem(api.post(path, json={"other": 1}), 422, "validation_error")
    assert_problem(api.post(path, json=["not_found"]), 422, "validation_error")
    assert_problem(
        api.post(path, data=b"{", headers={"Content-Type": "application/json"}),
        400,
        "malformed_body",
    )
    assert_problem(
        api.post(path, data=b"codes", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_problem(service.api().post(path), 404, "not_found")
    assert_problem(api.post("/v1/jobs/job_01m8xftb4h9emxgp7frxps8yzm/retry"), 404, "not_found")
    assert_problem(api.post("/v1/jobs/nonsense/retry"), 404, "not_found")
    by_token = InProcessApi(api.client, job["status_token"])
    assert_problem(by_token.post(path), 401, "unauthorized")
    assert_problem(service.anonymous().post(path), 401, "unauthorized")
    assert api.get(f"/v1/jobs/{job['id']}").get_json()["retried_by"] == []
    # An empty object retries everything, as no body does.
    retry = _retry(api, job["id"], json={})
    assert api.wait_job(retry["id"])["status"] == "failed"


@pytest.fixture(scope="module")
def strict(service: Service) -> Iterator[Service]:
    """The same deployment, now refusing unregistered types."""
    yield from strict_types(service)


def test_a_retry_checks_the_types_as_they_are_now(service: Service, strict: Service) -> None:
    tenant = "retry-types"
    api = service.api(tenant)
    job = api.submit(
        [
            {"op": "upsert", "type": "guarded", "id": "g", "data": {"reject": True}},
            {"op": "patch", "type": "acct", "id": "absent", "data": {"n": 1}},
        ]
    )
    assert api.wait_job(job["id"])["status"] == "failed"
    now_strict = strict.api(tenant)
    body = assert_problem(now_strict.post(f"/v1/jobs/{job['id']}/retry"), 422, "unknown_type")
    assert list(body["errors"]) == ["1"]  # keyed by the original job's index
    retry = now_strict.post(f"/v1/jobs/{job['id']}/retry", json={"codes": ["rule_rejected"]})
    assert retry.status_code == 202, retry.get_json()
    assert api.wait_job(retry.get_json()["id"])["counts"]["failed"] == 1
