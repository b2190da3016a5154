"""Bulk submission: the 202 answer, both body formats, all-or-nothing admission."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bulkapi.api.bulk import OVERLAP_FROM
from tests.api.conftest import (
    JSON,
    NDJSON,
    assert_counts_add_up,
    assert_job_representation,
    assert_problem,
    parse_time,
)
from tests.conftest import InProcessApi, Service

CALLBACK = "https://hooks.example.com/bulk?tenant=acme"


def _op(rid: str = "p1", **fields: Any) -> dict[str, Any]:
    return {"op": "upsert", "type": "product", "id": rid, "data": {"sku": rid}, **fields}


def _ndjson(*operations: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(op) + b"\n" for op in operations)


def _assert_nothing_admitted(api: InProcessApi, *rids: str) -> None:
    assert api.get("/v1/jobs").get_json()["items"] == []
    for rid in rids:
        assert_problem(api.get(f"/v1/resources/product/{rid}"), 404, "not_found")


def test_submit_answers_202_with_location_retry_after_and_queued_job(
    service: Service, api: InProcessApi
) -> None:
    with service.drains_paused():
        response = api.post("/v1/bulk", json={"operations": [_op("p1"), _op("p2")]})
        assert response.status_code == 202
        assert response.mimetype == "application/json"
        body = response.get_json()
        assert response.headers["Location"] == f"/v1/jobs/{body['id']}"
        assert int(response.headers["Retry-After"]) >= 1
        assert_job_representation(body)
        assert "status_token" in body
        assert body["status"] == "queued"
        assert body["total"] == 2
        assert body["counts"] == {"pending": 2, "succeeded": 0, "failed": 0, "cancelled": 0}
        assert body["progress"] == 0.0
        assert body["started_at"] is None
        assert body["finished_at"] is None
        assert [entry["status"] for entry in body["status_history"]] == ["queued"]
        assert parse_time(body["status_history"][0]["at"]) == parse_time(body["created_at"])
        assert body["links"] == {
            "self": f"/v1/jobs/{body['id']}",
            "results": f"/v1/jobs/{body['id']}/results",
        }
        assert body["callback_url"] is None
        assert body["metadata"] is None
        assert isinstance(body["status_token"], str)
        assert body["status_token"]

        stored = api.get(body["links"]["self"]).get_json()
        for name in ("id", "created_at", "total", "counts", "links", "callback_url", "metadata"):
            assert stored[name] == body[name]
    assert api.wait_job(body["id"])["status"] == "succeeded"


def test_submit_records_callback_url_and_metadata(api: InProcessApi) -> None:
    metadata = {"source": "import-42", "nested": {"rows": 2}}
    job = api.submit([_op()], callback_url=CALLBACK, metadata=metadata)
    assert job["callback_url"] == CALLBACK
    assert job["metadata"] == metadata
    stored = api.get(f"/v1/jobs/{job['id']}").get_json()
    assert stored["callback_url"] == CALLBACK
    assert stored["metadata"] == metadata


def test_submitted_operations_are_applied(api: InProcessApi) -> None:
    api.put("/v1/resources/product/p2", json={"sku": "p2", "price": 1})
    api.put("/v1/resources/product/p3", json={"sku": "p3"})
    job = api.submit(
        [
            _op("p1"),
            {"op": "patch", "type": "product", "id": "p2", "data": {"price": 2}},
            {"op": "delete", "type": "product", "id": "p3"},
        ]
    )
    final = api.wait_job(job["id"])
    assert final["status"] == "succeeded"
    assert api.get("/v1/resources/product/p1").get_json()["data"] == {"sku": "p1"}
    assert api.get("/v1/resources/product/p2").get_json()["data"] == {"sku": "p2", "price": 2}
    assert_problem(api.get("/v1/resources/product/p3"), 404, "not_found")
    assert [r["version"] for r in api.results(job["id"])] == [1, 2, 2]


@pytest.mark.parametrize("media_type", ["application/x-ndjson", "application/ndjson"])
def test_ndjson_body_is_accepted_with_callback_url_in_query(
    api: InProcessApi, media_type: str
) -> None:
    body = _ndjson(_op("p1"), _op("p2")) + b"\n  \n"  # blank lines are ignored
    response = api.post(
        "/v1/bulk",
        query_string={"callback_url": CALLBACK},
        data=body,
        headers={"Content-Type": media_type},
    )
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert job["total"] == 2
    assert job["callback_url"] == CALLBACK
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert api.wait_job(job["id"])["status"] == "succeeded"
    assert [r["id"] for r in api.results(job["id"])] == ["p1", "p2"]


def test_ndjson_body_without_trailing_newline_is_accepted(api: InProcessApi) -> None:
    body = _ndjson(_op("p1"), _op("p2")).rstrip(b"\n")
    response = api.post("/v1/bulk", data=body, headers=NDJSON)
    assert response.status_code == 202
    assert response.get_json()["total"] == 2


def test_ndjson_line_that_is_not_json_is_validation_error_at_its_index(
    api: InProcessApi,
) -> None:
    body = _ndjson(_op("p1")) + b"{not json\n" + _ndjson(_op("p3"))
    response = api.post("/v1/bulk", data=body, headers=NDJSON)
    problem = assert_problem(response, 422, "validation_error")
    assert set(problem["errors"]) == {"1"}
    _assert_nothing_admitted(api, "p1", "p3")


INVALID_OPERATIONS = [
    pytest.param({"op": "merge", "type": "product", "id": "x", "data": {}}, "op", id="unknown-op"),
    pytest.param({"type": "product", "id": "x", "data": {}}, "op", id="missing-op"),
    pytest.param({"op": "upsert", "type": "Product", "id": "x", "data": {}}, "type", id="bad-type"),
    pytest.param({"op": "upsert", "id": "x", "data": {}}, "type", id="missing-type"),
    pytest.param({"op": "upsert", "type": 7, "id": "x", "data": {}}, "type", id="type-not-str"),
    pytest.param({"op": "upsert", "type": "product", "id": "a/b", "data": {}}, "id", id="bad-id"),
    pytest.param({"op": "upsert", "type": "product", "id": "", "data": {}}, "id", id="empty-id"),
    pytest.param({"op": "upsert", "type": "product", "id": 12, "data": {}}, "id", id="id-not-str"),
    pytest.param({"op": "upsert", "type": "product", "id": "x"}, "data", id="upsert-no-data"),
    pytest.param({"op": "patch", "type": "product", "id": "x"}, "data", id="patch-no-data"),
    pytest.param(
        {"op": "delete", "type": "product", "id": "x", "data": {}}, "data", id="delete-with-data"
    ),
    pytest.param(
        {"op": "upsert", "type": "product", "id": "x", "data": [1]}, "data", id="data-list"
    ),
    pytest.param(
        {"op": "upsert", "type": "product", "id": "x", "data": None}, "data", id="data-null"
    ),
    pytest.param(
        {"op": "upsert", "type": "product", "id": "x", "data": {}, "if_version": "1"},
        "if_version",
        id="if-version-string",
    ),
    pytest.param(
        {"op": "upsert", "type": "product", "id": "x", "data": {}, "if_version": -1},
        "if_version",
        id="if-version-negative",
    ),
    pytest.param(
        {"op": "upsert", "type": "product", "id": "x", "data": {}, "if_version": 1.5},
        "if_version",
        id="if-version-float",
    ),
    pytest.param(
        {"op": "upsert", "type": "product", "id": "x", "data": {}, "if_version": True},
        "if_version",
        id="if-version-bool",
    ),
    pytest.param(
        {"op": "upsert", "type": "product", "id": "x", "data": {}, "colour": "red"},
        "colour",
        id="unknown-field",
    ),
    pytest.param(["upsert", "product", "x"], "_schema", id="not-an-object"),
]


@pytest.mark.parametrize(("bad", "field"), INVALID_OPERATIONS)
def test_invalid_operation_is_validation_error_keyed_by_its_index(
    api: InProcessApi, bad: object, field: str
) -> None:
    response = api.post("/v1/bulk", json={"operations": [_op("p0"), _op("p1"), bad, _op("p3")]})
    problem = assert_problem(response, 422, "validation_error")
    assert set(problem["errors"]) == {"2"}, problem["errors"]
    assert field in problem["errors"]["2"], problem["errors"]
    assert all(isinstance(message, str) for message in problem["errors"]["2"][field])
    _assert_nothing_admitted(api, "p0", "p1", "p3")


def test_every_invalid_operation_is_reported_at_once(api: InProcessApi) -> None:
    operations = [
        {"op": "merge", "type": "product", "id": "a", "data": {}},
        _op("p1"),
        {"op": "delete", "type": "BAD", "id": "b", "data": {}},
    ]
    problem = assert_problem(
        api.post("/v1/bulk", json={"operations": operations}), 422, "validation_error"
    )
    assert set(problem["errors"]) == {"0", "2"}
    assert set(problem["errors"]["2"]) == {"type", "data"}
    _assert_nothing_admitted(api, "p1")


def test_same_resource_twice_is_duplicate_resource(api: InProcessApi) -> None:
    operations = [
        _op("p1"),
        _op("p2"),
        {"op": "patch", "type": "product", "id": "p1", "data": {"x": 1}},
        {"op": "delete", "type": "product", "id": "p1"},
        _op("p2"),
        {"op": "upsert", "type": "other", "id": "p1", "data": {}},
    ]
    problem = assert_problem(
        api.post("/v1/bulk", json={"operations": operations}), 422, "duplicate_resource"
    )
    duplicates = sorted(problem["duplicates"], key=lambda d: d["id"])
    assert duplicates == [
        {"type": "product", "id": "p1", "indexes": [0, 2, 3]},
        {"type": "product", "id": "p2", "indexes": [1, 4]},
    ]
    _assert_nothing_admitted(api, "p1", "p2")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"operations": []}', "application/json"),
        (b"", "application/x-ndjson"),
        (b"\n\n", "application/x-ndjson"),
    ],
)
def test_empty_operation_list_is_validation_error(
    api: InProcessApi, body: bytes, content_type: str
) -> None:
    response = api.post("/v1/bulk", data=body, headers={"Content-Type": content_type})
    assert_problem(response, 422, "validation_error")
    _assert_nothing_admitted(api)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "operations"),
        ({"operations": {"0": {}}}, "operations"),
        ({"operations": [_op()], "extra": 1}, "extra"),
        ({"operations": [_op()], "metadata": [1]}, "metadata"),
        ({"operations": [_op()], "callback_url": 5}, "callback_url"),
        ({"operations": [_op()], "callback_url": "ftp://example.com/x"}, "callback_url"),
        ({"operations": [_op()], "callback_url": "/relative/path"}, "callback_url"),
    ],
)
def test_invalid_bulk_envelope_is_validation_error(
    api: InProcessApi, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(api.post("/v1/bulk", json=body), 422, "validation_error")
    assert field in problem["errors"]
    _assert_nothing_admitted(api, "p1")


@pytest.mark.parametrize("body", [b"[]", b'"operations"', b"null"])
def test_bulk_body_that_is_not_an_object_is_validation_error(
    api: InProcessApi, body: bytes
) -> None:
    response = api.post("/v1/bulk", data=body, headers=JSON)
    assert_problem(response, 422, "validation_error")
    _assert_nothing_admitted(api)


@pytest.mark.parametrize("body", [b"", b"{", b'{"operations": [}', b"\xc3\x28"])
def test_bulk_body_that_is_not_json_is_malformed_body(api: InProcessApi, body: bytes) -> None:
    response = api.post("/v1/bulk", data=body, headers=JSON)
    assert_problem(response, 400, "malformed_body")
    _assert_nothing_admitted(api)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data"])
def test_bulk_body_of_another_media_type_is_unsupported(
    api: InProcessApi, content_type: str
) -> None:
    response = api.post(
        "/v1/bulk",
        data=orjson.dumps({"operations": [_op()]}),
        headers={"Content-Type": content_type},
    )
    assert_problem(response, 415, "unsupported_media_type")
    _assert_nothing_admitted(api, "p1")


def test_bulk_body_without_content_type_is_unsupported(api: InProcessApi) -> None:
    response = api.post("/v1/bulk", data=orjson.dumps({"operations": [_op()]}))
    assert_problem(response, 415, "unsupported_media_type")
    _assert_nothing_admitted(api, "p1")


def test_rejected_request_leaves_keys_free_for_sync_writes(api: InProcessApi) -> None:
    bad = {"operations": [_op("p1"), {"op": "upsert", "type": "product", "id": "p2"}]}
    assert_problem(api.post("/v1/bulk", json=bad), 422, "validation_error")
    response = api.put("/v1/resources/product/p1", json={"sku": "sync"})
    assert response.status_code == 201
    assert response.get_json()["version"] == 1


@pytest.mark.parametrize("media", ["json", "ndjson"])
def test_a_large_request_refused_after_its_keys_went_ahead_leaves_no_trace(
    api: InProcessApi, media: str
) -> None:
    """Large enough that, on PostgreSQL, its keys are sent before its documents are
    checked (on SQLite it is checked whole first)."""
    rids = [f"big{number}" for number in range(OVERLAP_FROM + 100)]
    operations = [_op(rid) for rid in rids]
    operations[7] = {**operations[7], "data": ["not", "an", "object"]}
    operations[-1] = {**operations[-1], "if_version": -1}
    refused = (
        api.post("/v1/bulk", json={"operations": operations})
        if media == "json"
        else api.post("/v1/bulk", data=_ndjson(*operations), headers=NDJSON)
    )
    body = assert_problem(refused, 422, "validation_error")
    assert set(body["errors"]) == {"7", str(len(rids) - 1)}
    _assert_nothing_admitted(api, rids[0], rids[7], rids[-1])
    # The keys are free for a sync write, and the next job numbers them from the start.
    assert api.put(f"/v1/resources/product/{rids[0]}", json={"sku": "sync"}).status_code == 201
    job = api.wait_job(api.submit([_op(rid) for rid in rids])["id"])
    assert job["counts"]["succeeded"] == len(rids)
    assert api.get(f"/v1/resources/product/{rids[0]}").get_json()["version"] == 2
    assert api.get(f"/v1/resources/product/{rids[-1]}").get_json()["version"] == 1


def test_jobs_of_one_submission_count_every_operation(api: InProcessApi) -> None:
    operations = [_op(f"p{number}") for number in range(250)]
    job = api.submit(operations)
    assert job["total"] == 250
    final = api.wait_job(job["id"])
    assert final["counts"]["succeeded"] == 250
    assert_counts_add_up(final)
    results = api.results(job["id"])
    assert [result["index"] for result in results] == list(range(250))
    assert [result["id"] for result in results] == [f"p{number}" for number in range(250)]
