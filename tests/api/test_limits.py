"""Admission limits: operation count, body size, document size.

Limits are configuration and do not depend on the deployment mode, so these run on one
embedded service built with tiny limits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from bulkapi.config import Settings
from tests.api.conftest import (
    JSON,
    NDJSON,
    SMALL_MAX_BODY_BYTES,
    SMALL_MAX_DOCUMENT_BYTES,
    SMALL_MAX_OPERATIONS,
    assert_problem,
)
from tests.conftest import InProcessApi, Service, embedded_service

DEFAULT_MAX_DOCUMENT_BYTES = Settings().max_document_bytes


def _ops(count: int) -> list[dict[str, Any]]:
    return [{"op": "upsert", "type": "row", "id": f"r{n}", "data": {}} for n in range(count)]


def _ndjson(operations: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(op) + b"\n" for op in operations)


def _padding(size: int) -> dict[str, str]:
    """A document that serializes to exactly ``size`` bytes."""
    overhead = len(orjson.dumps({"pad": ""}))
    return {"pad": "x" * (size - overhead)}


def _assert_nothing_admitted(api: InProcessApi, count: int) -> None:
    assert api.get("/v1/jobs").get_json()["items"] == []
    for n in range(count):
        assert_problem(api.get(f"/v1/resources/row/r{n}"), 404, "not_found")


def test_json_request_at_the_operation_limit_is_accepted(limited_api: InProcessApi) -> None:
    job = limited_api.submit(_ops(SMALL_MAX_OPERATIONS))
    assert job["total"] == SMALL_MAX_OPERATIONS
    assert limited_api.wait_job(job["id"])["status"] == "succeeded"


def test_json_request_over_the_operation_limit_is_too_many_operations(
    limited_api: InProcessApi,
) -> None:
    response = limited_api.post("/v1/bulk", json={"operations": _ops(SMALL_MAX_OPERATIONS + 1)})
    assert_problem(response, 413, "too_many_operations")
    _assert_nothing_admitted(limited_api, SMALL_MAX_OPERATIONS + 1)


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_ndjson_request_over_the_operation_limit_is_too_many_operations(
    limited_api: InProcessApi, trailing_newline: bool
) -> None:
    body = _ndjson(_ops(SMALL_MAX_OPERATIONS + 1))
    if not trailing_newline:
        body = body.rstrip(b"\n")
    response = limited_api.post("/v1/bulk", data=body, headers=NDJSON)
    assert_problem(response, 413, "too_many_operations")
    _assert_nothing_admitted(limited_api, SMALL_MAX_OPERATIONS + 1)


def test_ndjson_request_at_the_operation_limit_with_blank_lines_is_accepted(
    limited_api: InProcessApi,
) -> None:
    body = b"\n\n".join(orjson.dumps(op) for op in _ops(SMALL_MAX_OPERATIONS)) + b"\n\n"
    response = limited_api.post("/v1/bulk", data=body, headers=NDJSON)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["total"] == SMALL_MAX_OPERATIONS


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_bulk_body_over_the_size_limit_is_payload_too_large(
    limited_api: InProcessApi, content_type: str
) -> None:
    operations = [
        {"op": "upsert", "type": "row", "id": "r0", "data": {"pad": "x" * SMALL_MAX_BODY_BYTES}}
    ]
    body = (
        orjson.dumps({"operations": operations})
        if content_type == "application/json"
        else _ndjson(operations)
    )
    assert len(body) > SMALL_MAX_BODY_BYTES
    response = limited_api.post("/v1/bulk", data=body, headers={"Content-Type": content_type})
    assert_problem(response, 413, "payload_too_large")
    _assert_nothing_admitted(limited_api, 1)


def test_bulk_operation_with_a_document_over_the_limit_is_validation_error(
    limited_api: InProcessApi,
) -> None:
    operations = _ops(2)
    operations[1]["data"] = _padding(SMALL_MAX_DOCUMENT_BYTES + 1)
    response = limited_api.post("/v1/bulk", json={"operations": operations})
    problem = assert_problem(response, 422, "validation_error")
    assert set(problem["errors"]) == {"1"}
    assert "data" in problem["errors"]["1"]
    _assert_nothing_admitted(limited_api, 2)


def test_bulk_operation_with_a_document_at_the_limit_is_accepted(
    limited_api: InProcessApi,
) -> None:
    operations = _ops(1)
    operations[0]["data"] = _padding(SMALL_MAX_DOCUMENT_BYTES)
    job = limited_api.submit(operations)
    assert limited_api.wait_job(job["id"])["status"] == "succeeded"


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_document_over_the_limit_is_payload_too_large(
    limited_api: InProcessApi, method: str
) -> None:
    limited_api.put("/v1/resources/row/r0", json={})
    response = limited_api.request(
        method, "/v1/resources/row/r0", json=_padding(SMALL_MAX_DOCUMENT_BYTES + 1)
    )
    assert_problem(response, 413, "payload_too_large")
    assert limited_api.get("/v1/resources/row/r0").get_json()["version"] == 1


def test_document_far_over_the_limit_on_the_wire_is_payload_too_large(
    limited_api: InProcessApi,
) -> None:
    response = limited_api.put("/v1/resources/row/r0", json=_padding(SMALL_MAX_BODY_BYTES * 4))
    assert_problem(response, 413, "payload_too_large")
    assert_problem(limited_api.get("/v1/resources/row/r0"), 404, "not_found")


def test_document_at_the_limit_is_accepted(limited_api: InProcessApi) -> None:
    response = limited_api.put("/v1/resources/row/r0", json=_padding(SMALL_MAX_DOCUMENT_BYTES))
    assert response.status_code == 201


def _half(name: str) -> dict[str, Any]:
    """A document of just over half the limit, under the key ``name``."""
    return {name: "x" * (SMALL_MAX_DOCUMENT_BYTES // 2)}


def test_a_sync_patch_that_would_grow_a_document_past_the_limit_changes_nothing(
    limited_api: InProcessApi,
) -> None:
    assert limited_api.put("/v1/resources/row/grow", json=_half("a")).status_code == 201
    grown = limited_api.patch("/v1/resources/row/grow", json=_half("b"))
    body = assert_problem(grown, 422, "validation_error")
    assert str(SMALL_MAX_DOCUMENT_BYTES) in body["errors"]["_schema"][0]
    stored = limited_api.get("/v1/resources/row/grow").get_json()
    assert (stored["version"], stored["data"]) == (1, _half("a"))


def test_a_bulk_patch_that_would_grow_a_document_past_the_limit_fails_alone(
    limited_api: InProcessApi,
) -> None:
    assert limited_api.put("/v1/resources/row/grow", json=_half("a")).status_code == 201
    job = limited_api.submit(
        [
            {"op": "patch", "type": "row", "id": "grow", "data": _half("b")},
            {"op": "upsert", "type": "row", "id": "fits", "data": _half("a")},
        ]
    )
    assert limited_api.wait_job(job["id"])["status"] == "partially_succeeded"
    grown, fits = limited_api.results(job["id"])
    assert fits["status"] == "succeeded"
    assert grown["status"] == "failed"
    assert grown["error"]["code"] == "rule_rejected"
    assert str(SMALL_MAX_DOCUMENT_BYTES) in grown["error"]["message"]
    assert limited_api.get("/v1/resources/row/grow").get_json()["data"] == _half("a")


def test_a_document_within_the_limit_but_escaped_on_the_wire_is_accepted(
    api: InProcessApi,
) -> None:
    """The limit is on the document, as stored, not on how the client spelled it: 60 kB
    of "é" is 180 kB once a client escapes it (Python's json and requests do)."""
    document = {"pad": "\u00e9" * 30_000}
    escaped = json.dumps(document).encode()  # ensure_ascii: every é as \u00e9
    assert len(escaped) > 2 * DEFAULT_MAX_DOCUMENT_BYTES >= 2 * len(orjson.dumps(document))
    response = api.put("/v1/resources/row/esc", data=escaped, headers=JSON)
    assert response.status_code == 201, response.get_json()
    assert api.get("/v1/resources/row/esc").get_json()["data"] == document


@pytest.fixture(scope="module")
def two_a_day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from embedded_service(tmp_path_factory.mktemp("rate"), rate_limit="2 per day")


def test_a_tenant_over_its_rate_is_told_when_to_come_back(two_a_day: Service) -> None:
    api = two_a_day.api()
    assert api.get("/v1/jobs").status_code == 200
    assert api.put("/v1/resources/row/r0", json={}).status_code == 201
    refused = api.put("/v1/resources/row/r1", json={})
    assert_problem(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 86400  # the rest of the day
    assert_problem(api.get("/v1/resources/row/r1"), 429, "rate_limited")
    assert two_a_day.api().get("/v1/jobs").status_code == 200  # another tenant's count
