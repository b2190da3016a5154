"""Compressed request bodies: gzip is inflated within the body limit; other codings 415."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import orjson
import pytest

from tests.api.conftest import (
    JSON,
    NDJSON,
    SMALL_MAX_BODY_BYTES,
    assert_problem,
)
from tests.conftest import InProcessApi


def _op(rid: str) -> dict[str, Any]:
    return {"op": "upsert", "type": "product", "id": rid, "data": {"sku": rid}}


def _json_body(*rids: str) -> bytes:
    return orjson.dumps({"operations": [_op(rid) for rid in rids]})


def _ndjson_body(*rids: str) -> bytes:
    return b"".join(orjson.dumps(_op(rid)) + b"\n" for rid in rids)


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "GZIP", "identity, gzip"])
@pytest.mark.parametrize(
    ("body", "headers"),
    [(_json_body("p1", "p2"), JSON), (_ndjson_body("p1", "p2"), NDJSON)],
    ids=["json", "ndjson"],
)
def test_gzip_bulk_body_is_inflated_and_applied(
    api: InProcessApi, coding: str, body: bytes, headers: dict[str, str]
) -> None:
    response = api.post(
        "/v1/bulk", data=gzip.compress(body), headers=headers | {"Content-Encoding": coding}
    )
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["total"] == 2
    assert api.wait_job(response.get_json()["id"])["status"] == "succeeded"
    assert api.get("/v1/resources/product/p2").get_json()["data"] == {"sku": "p2"}


def test_gzip_body_of_several_members_is_read_to_its_end(api: InProcessApi) -> None:
    body = gzip.compress(_ndjson_body("p1")) + gzip.compress(_ndjson_body("p2"))
    response = api.post("/v1/bulk", data=body, headers=NDJSON | {"Content-Encoding": "gzip"})
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["total"] == 2


def test_identity_coding_is_the_body_as_sent(api: InProcessApi) -> None:
    response = api.post(
        "/v1/bulk", data=_json_body("p1"), headers=JSON | {"Content-Encoding": "identity"}
    )
    assert response.status_code == 202, response.get_json()


def test_gzip_resource_document_is_inflated(api: InProcessApi) -> None:
    response = api.put(
        "/v1/resources/product/p1",
        data=gzip.compress(b'{"sku": "p1"}'),
        headers=JSON | {"Content-Encoding": "gzip"},
    )
    assert response.status_code == 201, response.get_json()
    assert api.get("/v1/resources/product/p1").get_json()["data"] == {"sku": "p1"}


@pytest.mark.parametrize("coding", ["deflate", "br", "zstd", "compress", "gzip, gzip", "gzip, br"])
def test_other_content_coding_is_415_naming_gzip(api: InProcessApi, coding: str) -> None:
    response = api.post(
        "/v1/bulk", data=_json_body("p1"), headers=JSON | {"Content-Encoding": coding}
    )
    problem = assert_problem(response, 415, "unsupported_media_type")
    assert response.headers["Accept-Encoding"] == "gzip"
    assert coding in problem["detail"]
    assert api.get("/v1/jobs").get_json()["items"] == []


@pytest.mark.parametrize(
    "body",
    [
        b"not gzip at all",
        gzip.compress(_json_body("p1"))[:-12],  # cut before its end marker
        gzip.compress(_json_body("p1"))[:10] + b"\xff" * 20,  # a damaged stream
        gzip.compress(_json_body("p1")) + b"trailing",  # garbage after the member
        zlib.compress(_json_body("p1")),  # deflate, declared as gzip
    ],
    ids=["not-gzip", "truncated", "damaged", "trailing-garbage", "deflate-as-gzip"],
)
def test_broken_gzip_body_is_malformed_and_changes_nothing(api: InProcessApi, body: bytes) -> None:
    response = api.post("/v1/bulk", data=body, headers=JSON | {"Content-Encoding": "gzip"})
    assert_problem(response, 400, "malformed_body")
    assert api.get("/v1/jobs").get_json()["items"] == []


@pytest.mark.parametrize("headers", [JSON, NDJSON], ids=["json", "ndjson"])
def test_gzip_body_inflating_past_the_limit_is_payload_too_large(
    limited_api: InProcessApi, headers: dict[str, str]
) -> None:
    # A few hundred bytes on the wire that would inflate to a hundred megabytes.
    bomb = gzip.compress(b" " * (1000 * SMALL_MAX_BODY_BYTES))
    assert len(bomb) < SMALL_MAX_BODY_BYTES
    response = limited_api.post(
        "/v1/bulk", data=bomb, headers=headers | {"Content-Encoding": "gzip"}
    )
    problem = assert_problem(response, 413, "payload_too_large")
    assert "inflates" in problem["detail"]
    assert limited_api.get("/v1/jobs").get_json()["items"] == []


def test_gzip_body_inflating_to_the_limit_is_taken(limited_api: InProcessApi) -> None:
    body = _json_body("p1")
    padded = body[:-1] + b" " * (SMALL_MAX_BODY_BYTES - len(body)) + b"}"
    assert len(padded) == SMALL_MAX_BODY_BYTES
    response = limited_api.post(
        "/v1/bulk", data=gzip.compress(padded), headers=JSON | {"Content-Encoding": "gzip"}
    )
    assert response.status_code == 202, response.get_json()


def test_same_operations_compressed_or_not_are_one_idempotent_request(api: InProcessApi) -> None:
    body = _ndjson_body("p1", "p2")
    key = {"Idempotency-Key": "gzip-or-not"}
    first = api.post("/v1/bulk", data=body, headers=NDJSON | key)
    assert first.status_code == 202, first.get_json()
    again = api.post(
        "/v1/bulk",
        data=gzip.compress(body, compresslevel=1),
        headers=NDJSON | key | {"Content-Encoding": "gzip"},
    )
    assert again.status_code == 202, again.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    other = api.post(
        "/v1/bulk",
        data=gzip.compress(_ndjson_body("p1", "p3")),
        headers=NDJSON | key | {"Content-Encoding": "gzip"},
    )
    assert_problem(other, 422, "idempotency_key_reused")
