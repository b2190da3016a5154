"""Authentication, tenant isolation and job status tokens."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event

from tests.api.conftest import assert_problem
from tests.conftest import InProcessApi, Service

UPSERT = {"op": "upsert", "type": "doc", "id": "d1", "data": {"n": 1}}

#: One request per endpoint family that needs an API key.
KEYED_REQUESTS = [
    ("GET", "/v1/resources/doc/d1", None),
    ("PUT", "/v1/resources/doc/d1", {"n": 1}),
    ("PATCH", "/v1/resources/doc/d1", {"n": 1}),
    ("DELETE", "/v1/resources/doc/d1", None),
    ("GET", "/v1/resources/doc", None),
    ("POST", "/v1/bulk", {"operations": [UPSERT]}),
    ("GET", "/v1/jobs", None),
    ("GET", "/v1/jobs/job_missing", None),
    ("GET", "/v1/jobs/job_missing/results", None),
    ("POST", "/v1/jobs/job_missing/cancel", None),
]


def _unauthorized(response) -> None:
    assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), KEYED_REQUESTS)
def test_request_without_api_key_is_unauthorized_with_bearer_challenge(
    service: Service, method: str, path: str, body: object
) -> None:
    _unauthorized(service.anonymous().request(method, path, json=body))


@pytest.mark.parametrize(("method", "path", "body"), KEYED_REQUESTS)
def test_request_with_wrong_api_key_is_unauthorized(
    service: Service, method: str, path: str, body: object
) -> None:
    _unauthorized(
        service.anonymous().request(
            method, path, json=body, headers={"Authorization": "Bearer bk_not-a-real-key"}
        )
    )


@pytest.mark.parametrize(
    "authorization", ["", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "bk_key-without-scheme"]
)
def test_malformed_authorization_header_is_unauthorized(
    service: Service, authorization: str
) -> None:
    response = service.anonymous().get(
        "/v1/resources/doc/d1", headers={"Authorization": authorization}
    )
    _unauthorized(response)


def test_bearer_scheme_is_case_insensitive(api: InProcessApi) -> None:
    assert api.put("/v1/resources/doc/d1", json={"n": 1}).status_code == 201
    response = api.get("/v1/resources/doc/d1", headers={"Authorization": f"bearer {api.key}"})
    assert response.status_code == 200


def test_another_tenants_resource_is_not_found_and_untouched(
    service: Service, api: InProcessApi
) -> None:
    assert api.put("/v1/resources/doc/shared", json={"owner": "a"}).status_code == 201
    other = service.api()
    assert_problem(other.get("/v1/resources/doc/shared"), 404, "not_found")
    assert_problem(other.patch("/v1/resources/doc/shared", json={"x": 1}), 404, "not_found")
    assert_problem(other.delete("/v1/resources/doc/shared"), 404, "not_found")
    assert other.get("/v1/resources/doc").get_json()["items"] == []

    mine = api.get("/v1/resources/doc/shared")
    assert mine.get_json()["data"] == {"owner": "a"}
    assert mine.headers["ETag"] == '"1"'


def test_same_key_in_two_tenants_are_separate_resources(
    service: Service, api: InProcessApi
) -> None:
    assert api.put("/v1/resources/doc/same", json={"owner": "a"}).status_code == 201
    assert api.put("/v1/resources/doc/same", json={"owner": "a2"}).status_code == 200
    other = service.api()
    created = other.put("/v1/resources/doc/same", json={"owner": "b"})
    assert created.status_code == 201
    assert created.get_json()["version"] == 1
    assert api.get("/v1/resources/doc/same").get_json()["data"] == {"owner": "a2"}


def test_another_tenants_job_is_not_found(service: Service, api: InProcessApi) -> None:
    job = api.submit([UPSERT])
    other = service.api()
    assert_problem(other.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
    assert_problem(other.get(f"/v1/jobs/{job['id']}/results"), 404, "not_found")
    assert_problem(other.post(f"/v1/jobs/{job['id']}/cancel"), 404, "not_found")
    assert other.get("/v1/jobs").get_json()["items"] == []
    assert api.wait_job(job["id"])["status"] == "succeeded"


def test_another_tenants_pending_bulk_work_does_not_make_my_key_busy(
    service: Service, api: InProcessApi
) -> None:
    other = service.api()
    with service.drains_paused():
        other.submit([UPSERT])
        response = api.put("/v1/resources/doc/d1", json={"n": 2})
    assert response.status_code == 201


def test_absent_job_is_not_found(api: InProcessApi) -> None:
    assert_problem(api.get("/v1/jobs/job_00000000000000000000000000"), 404, "not_found")
    assert_problem(api.get("/v1/jobs/job_00000000000000000000000000/results"), 404, "not_found")
    assert_problem(api.post("/v1/jobs/job_00000000000000000000000000/cancel"), 404, "not_found")


def test_status_token_reads_its_own_job_and_results(service: Service, api: InProcessApi) -> None:
    job = api.submit([UPSERT])
    api.wait_job(job["id"])
    reader = InProcessApi(service.app.test_client(), job["status_token"])
    status = reader.get(f"/v1/jobs/{job['id']}")
    assert status.status_code == 200
    assert status.get_json()["status"] == "succeeded"
    results = reader.get(f"/v1/jobs/{job['id']}/results")
    assert results.status_code == 200
    assert [item["status"] for item in results.get_json()["items"]] == ["succeeded"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/jobs/{job}/cancel", None),
        ("GET", "/v1/jobs", None),
        ("POST", "/v1/bulk", {"operations": [UPSERT]}),
        ("GET", "/v1/resources/doc/d1", None),
        ("PUT", "/v1/resources/doc/d1", {"n": 9}),
        ("PATCH", "/v1/resources/doc/d1", {"n": 9}),
        ("DELETE", "/v1/resources/doc/d1", None),
        ("GET", "/v1/resources/doc", None),
    ],
)
def test_status_token_is_refused_everywhere_but_reading_its_job(
    service: Service, api: InProcessApi, method: str, path: str, body: object
) -> None:
    job = api.submit([UPSERT])
    api.wait_job(job["id"])
    reader = InProcessApi(service.app.test_client(), job["status_token"])
    _unauthorized(reader.request(method, path.format(job=job["id"]), json=body))
    assert [j["id"] for j in api.get("/v1/jobs").get_json()["items"]] == [job["id"]]
    resource = api.get("/v1/resources/doc/d1")
    assert resource.headers["ETag"] == '"1"'
    assert resource.get_json()["data"] == {"n": 1}


def test_status_token_cannot_read_another_job(service: Service, api: InProcessApi) -> None:
    first = api.submit([UPSERT])
    second = api.submit([{**UPSERT, "id": "d2"}])
    reader = InProcessApi(service.app.test_client(), first["status_token"])
    assert_problem(reader.get(f"/v1/jobs/{second['id']}"), 404, "not_found")
    assert_problem(reader.get(f"/v1/jobs/{second['id']}/results"), 404, "not_found")


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` runs inside the block for this thread (the test
    client's requests run in it; embedded drains and sweeps run in their own)."""
    seen: list[str] = []
    here = threading.get_ident()

    def record(*args: Any) -> None:
        if threading.get_ident() == here:
            seen.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_known_key_is_not_looked_up_again_on_every_request(service: Service) -> None:
    """Credentials are remembered: once a key was seen, authenticating it (and counting
    its rate) asks the database nothing. The request is one that needs nothing else."""
    api = service.api()
    with _statements(service.runtime.engine) as first:
        assert_problem(api.get("/v1/jobs/job_missing"), 404, "not_found")
    assert first, "the first request looks the key up"
    with _statements(service.runtime.engine) as later:
        for _ in range(5):
            assert_problem(api.get("/v1/jobs/job_missing"), 404, "not_found")
    assert later == []
