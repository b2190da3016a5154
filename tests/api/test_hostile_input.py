"""Hostile input: each request gets its documented 4xx and leaves the database unchanged.

Every case is sent as a fresh tenant; the tenant's rows in ``jobs``, ``operations`` and
``resources`` are counted before and after (the admission is all-or-nothing, and a
refused single write must not leave half a row). Every error body must be an RFC 9457
problem without a stack trace, and every response carries the security headers.
"""

from __future__ import annotations

import io
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from bulkapi.api.pagination import encode_cursor
from bulkapi.store.tables import jobs, operations, resources
from tests.api.conftest import (
    JSON,
    NDJSON,
    SMALL_MAX_BODY_BYTES,
    assert_problem,
    tenant_of,
)
from tests.conftest import InProcessApi, Service
from tests.support import WAIT_SECONDS, embedded_server, row_count

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
TEN_MB = 10 * 1024 * 1024


def _op(**fields: Any) -> dict[str, Any]:
    return {"op": "upsert", "type": "t", "id": "i", "data": {"n": 1}, **fields}


def _bulk(*ops: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    return {"data": orjson.dumps({"operations": list(ops), **envelope}), "headers": JSON}


def _raw_bulk(raw: bytes) -> dict[str, Any]:
    return {"data": raw, "headers": JSON}


def _ndjson(*lines: bytes) -> dict[str, Any]:
    return {"data": b"\n".join(lines) + b"\n", "headers": NDJSON}


def _nested(depth: int) -> bytes:
    """A JSON object whose value nests ``depth`` arrays deep."""
    return b'{"deep": ' + b"[" * depth + b"]" * depth + b"}"


GOOD_LINE = orjson.dumps(_op())


def _many_ndjson(count: int) -> bytes:
    line = b'{"op":"upsert","type":"t","id":"i%d","data":{}}\n'
    return b"".join(line % n for n in range(count))


class Case:
    def __init__(self, method: str, path: str, status: int, code: str, **kwargs: Any) -> None:
        self.method, self.path, self.status, self.code, self.kwargs = (
            method,
            path,
            status,
            code,
            kwargs,
        )


BULK = "/v1/bulk"
RES = "/v1/resources/t/i"

#: (id, request, documented answer). Built lazily: some bodies are megabytes.
CORPUS: dict[str, Any] = {
    # malformed JSON and NDJSON
    "json-truncated": lambda: Case("POST", BULK, 400, "malformed_body", **_raw_bulk(b'{"ope')),
    "json-trailing-garbage": lambda: Case(
        "POST", BULK, 400, "malformed_body", **_raw_bulk(orjson.dumps({"operations": []}) + b"}")
    ),
    "json-empty-body": lambda: Case("POST", BULK, 400, "malformed_body", **_raw_bulk(b"")),
    "json-nan": lambda: Case("PUT", RES, 400, "malformed_body", data=b'{"a": NaN}', headers=JSON),
    "json-single-quotes": lambda: Case(
        "PUT", RES, 400, "malformed_body", data=b"{'a': 1}", headers=JSON
    ),
    "json-not-an-object": lambda: Case("POST", BULK, 422, "validation_error", **_raw_bulk(b"[]")),
    "document-not-an-object": lambda: Case(
        "PUT", RES, 422, "validation_error", data=b"[1, 2]", headers=JSON
    ),
    "ndjson-bad-line": lambda: Case(
        "POST", BULK, 422, "validation_error", **_ndjson(GOOD_LINE, b'{"op": "upsert",')
    ),
    "ndjson-json-array-body": lambda: Case(
        "POST", BULK, 422, "validation_error", **_ndjson(orjson.dumps([_op()]))
    ),
    "ndjson-scalar-lines": lambda: Case(
        "POST", BULK, 422, "validation_error", **_ndjson(b"1", b"null", b'"x"')
    ),
    "ndjson-only-blank-lines": lambda: Case(
        "POST", BULK, 422, "validation_error", **_ndjson(b"", b"   ", b"")
    ),
    # wrong types
    "operations-a-string": lambda: Case(
        "POST", BULK, 422, "validation_error", **_raw_bulk(b'{"operations": "upsert them all"}')
    ),
    "op-a-number": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(op=1))),
    "type-an-object": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(type={}))),
    "id-a-list": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(id=["i"]))),
    "id-a-number": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(id=7))),
    "data-a-string": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(data="{}"))),
    "data-a-list": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(data=[1]))),
    "if-version-a-string": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(if_version="1"))
    ),
    "if-version-a-bool": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(if_version=True))
    ),
    "if-version-negative": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(if_version=-1))
    ),
    "metadata-a-list": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(), metadata=[1])
    ),
    "callback-url-a-number": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(), callback_url=80)
    ),
    "deadline-a-bool": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(), deadline=True)
    ),
    "deadline-in-the-past": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(), deadline="2000-01-01T00:00:00Z")
    ),
    "deadline-far-future": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(), deadline=1e308)
    ),
    "deadline-nan-query": lambda: Case(
        "POST", BULK + "?deadline=nan", 422, "validation_error", **_ndjson(GOOD_LINE)
    ),
    "callback-url-not-http": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(), callback_url="file:///etc/passwd")
    ),
    "callback-url-broken-ipv6": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(), callback_url="http://[::1")
    ),
    "callback-url-port-too-big": lambda: Case(
        "POST",
        BULK,
        422,
        "validation_error",
        **_bulk(_op(), callback_url="http://x.example:99999/"),
    ),
    "callback-url-port-not-a-number": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(), callback_url="http://x.example:abc/")
    ),
    "unknown-op-field": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(evil=True))
    ),
    "unknown-envelope-field": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(), tenant_id="someone-else")
    ),
    "delete-with-data": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(op="delete"))
    ),
    "one-bad-op-among-good": lambda: Case(
        "POST",
        BULK,
        422,
        "validation_error",
        **_bulk(_op(id="a"), _op(id="b"), _op(id="c", op="explode")),
    ),
    "duplicate-resource": lambda: Case(
        "POST", BULK, 422, "duplicate_resource", **_bulk(_op(), _op(data={"n": 2}))
    ),
    # nulls in every field that must not be null
    "null-body": lambda: Case("POST", BULK, 422, "validation_error", **_raw_bulk(b"null")),
    "null-operations": lambda: Case(
        "POST", BULK, 422, "validation_error", **_raw_bulk(b'{"operations": null}')
    ),
    "null-op": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(op=None))),
    "null-type": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(type=None))),
    "null-id": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(id=None))),
    "null-data": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(data=None))),
    "null-operation": lambda: Case(
        "POST", BULK, 422, "validation_error", **_raw_bulk(b'{"operations": [null]}')
    ),
    "null-document": lambda: Case("PUT", RES, 422, "validation_error", data=b"null", headers=JSON),
    # NUL bytes and invalid UTF-8
    "raw-nul-byte-in-json": lambda: Case(
        "POST", BULK, 400, "malformed_body", **_raw_bulk(b'{"operations": [\x00]}')
    ),
    "raw-nul-byte-in-document": lambda: Case(
        "PUT", RES, 400, "malformed_body", data=b'{"a": "x\x00y"}', headers=JSON
    ),
    "escaped-nul-in-data": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(data={"a": "x\u0000y"}))
    ),
    "escaped-nul-in-data-key": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(data={"k\u0000": 1}))
    ),
    "escaped-nul-in-document": lambda: Case(
        "PUT", RES, 422, "validation_error", data=b'{"a": "\\u0000"}', headers=JSON
    ),
    "nul-in-type": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(type="t\0"))),
    "nul-in-id": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(id="i\u0000"))),
    "nul-in-ndjson-line": lambda: Case(
        "POST", BULK, 422, "validation_error", **_ndjson(GOOD_LINE, b'{"op":\x00}')
    ),
    "invalid-utf8-in-json": lambda: Case(
        "POST", BULK, 400, "malformed_body", **_raw_bulk(b'{"operations": ["\xff\xfe"]}')
    ),
    "invalid-utf8-in-document": lambda: Case(
        "PUT", RES, 400, "malformed_body", data=b'{"a": "\xc3\x28"}', headers=JSON
    ),
    "invalid-utf8-in-ndjson": lambda: Case(
        "POST", BULK, 422, "validation_error", **_ndjson(GOOD_LINE.replace(b'"t"', b'"\xff"'))
    ),
    "lone-surrogate-escape": lambda: Case(
        "POST", BULK, 400, "malformed_body", **_raw_bulk(b'{"operations": ["\\udc00"]}')
    ),
    # integers orjson would read as floats: refused, not rounded
    "integer-beyond-64-bits-in-document": lambda: Case(
        "PUT", RES, 400, "malformed_body", data=b'{"a": 18446744073709551616}', headers=JSON
    ),
    "integer-beyond-64-bits-in-ndjson": lambda: Case(
        "POST",
        BULK,
        422,
        "validation_error",
        **_ndjson(GOOD_LINE.replace(b'"n":1', b'"n":-9223372036854775809')),
    ),
    # huge strings and deep nesting
    "10mb-string-in-bulk-document": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(data={"s": "x" * TEN_MB}))
    ),
    "10mb-string-in-ndjson-document": lambda: Case(
        "POST",
        BULK,
        422,
        "validation_error",
        **_ndjson(orjson.dumps(_op(data={"s": "x" * TEN_MB}))),
    ),
    "10mb-string-in-sync-document": lambda: Case(
        "PUT", RES, 413, "payload_too_large", data=orjson.dumps({"s": "x" * TEN_MB}), headers=JSON
    ),
    "10mb-key-in-bulk-document": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(data={"k" * TEN_MB: 1}))
    ),
    "1000-deep-bulk-document": lambda: Case(
        "POST",
        BULK,
        422,
        "validation_error",
        **_raw_bulk(
            b'{"operations": [{"op": "upsert", "type": "t", "id": "i", "data": '
            + _nested(1000)
            + b"}]}"
        ),
    ),
    "1000-deep-sync-document": lambda: Case(
        "PUT", RES, 422, "validation_error", data=_nested(1000), headers=JSON
    ),
    "1000-deep-patch-document": lambda: Case(
        "PATCH", RES, 422, "validation_error", data=_nested(1000), headers=JSON
    ),
    "300-deep-metadata": lambda: Case(
        "POST",
        BULK,
        422,
        "validation_error",
        **_raw_bulk(b'{"operations": [' + GOOD_LINE + b'], "metadata": ' + _nested(300) + b"}"),
    ),
    "100000-deep-json": lambda: Case(
        "POST", BULK, 400, "malformed_body", **_raw_bulk(b"[" * 100_000 + b"]" * 100_000)
    ),
    # operation count
    "200000-operations-ndjson": lambda: Case(
        "POST", BULK, 413, "too_many_operations", **{"data": _many_ndjson(200_000)}, headers=NDJSON
    ),
    "200000-operations-json": lambda: Case(
        "POST",
        BULK,
        413,
        "too_many_operations",
        **_raw_bulk(
            b'{"operations": [' + _many_ndjson(200_000).rstrip(b"\n").replace(b"\n", b",") + b"]}"
        ),
    ),
    "empty-operations": lambda: Case("POST", BULK, 422, "validation_error", **_bulk()),
    # oversize keys
    "type-65-chars": lambda: Case(
        "POST", BULK, 422, "validation_error", **_bulk(_op(type="t" * 65))
    ),
    "id-129-chars": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(id="i" * 129))),
    "id-1mb": lambda: Case("POST", BULK, 422, "validation_error", **_bulk(_op(id="i" * 2**20))),
    "path-id-129-chars": lambda: Case(
        "PUT", "/v1/resources/t/" + "i" * 129, 422, "validation_error", json={}
    ),
    "path-type-65-chars": lambda: Case(
        "PUT", "/v1/resources/" + "t" * 65 + "/i", 422, "validation_error", json={}
    ),
    "type-uppercase": lambda: Case("PUT", "/v1/resources/T/i", 422, "validation_error", json={}),
    "id-with-space": lambda: Case("PUT", "/v1/resources/t/a%20b", 422, "validation_error", json={}),
    # headers
    "if-match-garbage": lambda: Case(
        "PUT", RES, 412, "version_mismatch", json={}, headers={"If-Match": "garbage"}
    ),
    "if-match-weak-tag": lambda: Case(
        "PUT", RES, 412, "version_mismatch", json={}, headers={"If-Match": 'W/"1"'}
    ),
    "if-match-list": lambda: Case(
        "PUT", RES, 412, "version_mismatch", json={}, headers={"If-Match": '"1", "2"'}
    ),
    "if-match-huge-number": lambda: Case(
        "PUT", RES, 412, "version_mismatch", json={}, headers={"If-Match": '"' + "9" * 500 + '"'}
    ),
    "prefer-garbage-on-absent-patch": lambda: Case(
        "PATCH", RES, 404, "not_found", json={}, headers={"Prefer": "wait=" + "9" * 5000 + ";;=,"}
    ),
    "idempotency-key-1000-chars": lambda: Case(
        "POST",
        BULK,
        422,
        "validation_error",
        **_bulk(_op()) | {"headers": {**JSON, "Idempotency-Key": "k" * 1000}},
    ),
    "idempotency-key-empty": lambda: Case(
        "POST",
        BULK,
        422,
        "validation_error",
        **_bulk(_op()) | {"headers": {**JSON, "Idempotency-Key": ""}},
    ),
    "authorization-garbage": lambda: Case(
        "GET", "/v1/jobs", 401, "unauthorized", headers={"Authorization": "Bearer " + "x" * 8000}
    ),
    "authorization-wrong-scheme": lambda: Case(
        "POST",
        BULK,
        401,
        "unauthorized",
        **_bulk(_op()) | {"headers": {**JSON, "Authorization": "Basic dXNlcjpwYXNz"}},
    ),
    # path traversal in ids
    "traversal-in-job-id": lambda: Case("GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", 404, "not_found"),
    "traversal-in-resource-id": lambda: Case(
        "PUT", "/v1/resources/t/..%2F..%2Fetc%2Fpasswd", 404, "not_found", json={}
    ),
    "backslash-traversal-in-resource-id": lambda: Case(
        "PUT", "/v1/resources/t/..%5C..%5Cwin.ini", 422, "validation_error", json={}
    ),
    "traversal-in-docs-assets": lambda: Case(
        "GET", "/docs/assets/..%2F..%2F..%2Fetc%2Fpasswd", 404, "not_found"
    ),
    "nul-in-job-id": lambda: Case("POST", "/v1/jobs/job%00x/cancel", 404, "not_found"),
    # query parameters and cursors
    "limit-zero": lambda: Case("GET", "/v1/jobs?limit=0", 422, "validation_error"),
    "limit-huge": lambda: Case(
        "GET", "/v1/resources/t?limit=1" + "0" * 40, 422, "validation_error"
    ),
    "limit-not-a-number": lambda: Case("GET", "/v1/jobs?limit=ten", 422, "validation_error"),
    "status-unknown": lambda: Case("GET", "/v1/jobs?status=exploded", 422, "validation_error"),
    "wait-negative": lambda: Case("GET", "/v1/jobs/job_x?wait=-1", 422, "validation_error"),
    "wait-over-60": lambda: Case("GET", "/v1/jobs/job_x?wait=61", 422, "validation_error"),
    "cursor-garbage": lambda: Case("GET", "/v1/jobs?cursor=%%%", 422, "validation_error"),
    "cursor-not-base64-json": lambda: Case(
        "GET", "/v1/resources/t?cursor=bm90IGpzb24", 422, "validation_error"
    ),
    "cursor-wrong-shape": lambda: Case(
        "GET", "/v1/jobs?cursor=eyJhZnRlciI6IFsxXX0", 422, "validation_error"
    ),
    "cursor-too-long": lambda: Case("GET", "/v1/jobs?cursor=" + "A" * 513, 422, "validation_error"),
    "effects-cursor-unicode-digits": lambda: Case(
        "GET", f"{RES}/effects?cursor=" + encode_cursor("\u00b2.0"), 422, "validation_error"
    ),
    "effects-cursor-out-of-range": lambda: Case(
        "GET", f"{RES}/effects?cursor={encode_cursor('9' * 20 + '.0')}", 422, "validation_error"
    ),
    "effects-cursor-no-dot": lambda: Case(
        "GET", f"{RES}/effects?cursor={encode_cursor('12')}", 422, "validation_error"
    ),
    "callback-url-query-too-long": lambda: Case(
        "POST",
        BULK + "?callback_url=http://x/" + "a" * 3000,
        422,
        "validation_error",
        **_ndjson(GOOD_LINE),
    ),
    # wrong methods
    "delete-bulk": lambda: Case("DELETE", BULK, 405, "method_not_allowed"),
    "get-bulk": lambda: Case("GET", BULK, 405, "method_not_allowed"),
    "patch-jobs": lambda: Case("PATCH", "/v1/jobs", 405, "method_not_allowed", json={}),
    "put-job": lambda: Case("PUT", "/v1/jobs/job_x", 405, "method_not_allowed", json={}),
    "get-cancel": lambda: Case("GET", "/v1/jobs/job_x/cancel", 405, "method_not_allowed"),
    "post-resource": lambda: Case("POST", RES, 405, "method_not_allowed", json={}),
    "delete-resource-list": lambda: Case("DELETE", "/v1/resources/t", 405, "method_not_allowed"),
    # wrong content types
    "bulk-text-plain": lambda: Case(
        "POST",
        BULK,
        415,
        "unsupported_media_type",
        data=GOOD_LINE,
        headers={"Content-Type": "text/plain"},
    ),
    "bulk-form": lambda: Case("POST", BULK, 415, "unsupported_media_type", data={"a": "b"}),
    "bulk-no-content-type": lambda: Case("POST", BULK, 415, "unsupported_media_type", data=b"{}"),
    "bulk-xml": lambda: Case(
        "POST",
        BULK,
        415,
        "unsupported_media_type",
        data=b"<ops/>",
        headers={"Content-Type": "application/xml"},
    ),
    "put-text-plain": lambda: Case(
        "PUT",
        RES,
        415,
        "unsupported_media_type",
        data=b"{}",
        headers={"Content-Type": "text/plain"},
    ),
    "patch-ndjson": lambda: Case(
        "PATCH", RES, 415, "unsupported_media_type", data=b"{}", headers=NDJSON
    ),
}


def _counts(service: Service, tenant_id: str) -> dict[str, int]:
    with service.runtime.engine.connect() as conn:
        return {
            table.name: conn.execute(
                select(func.count()).select_from(table).where(table.c.tenant_id == tenant_id)
            ).scalar_one()
            for table in (jobs, operations, resources)
        }


def assert_clean_problem(response: TestResponse, status: int, code: str) -> None:
    """A problem with this status and code, no stack trace, and the security headers."""
    assert_problem(response, status, code)
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text, text[:2000]
    assert_security_headers(response)


def assert_security_headers(response: TestResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, dict(response.headers))


@pytest.mark.parametrize("name", list(CORPUS))
def test_hostile_request_gets_its_documented_problem_and_changes_nothing(
    service: Service, name: str
) -> None:
    api = service.api()
    tenant_id = tenant_of(service, api)
    case = CORPUS[name]()
    before = _counts(service, tenant_id)
    response = api.request(case.method, case.path, **case.kwargs)
    assert_clean_problem(response, case.status, case.code)
    if case.status == 405:
        assert response.headers.get("Allow"), dict(response.headers)
        assert case.method not in response.headers["Allow"]
    assert _counts(service, tenant_id) == before


def test_hostile_requests_leave_existing_resources_untouched(api: InProcessApi) -> None:
    """Refused writes to a resource that exists leave its version and data as they were."""
    created = api.put(RES, json={"keep": True})
    assert created.status_code == 201
    attempts = [
        ("PUT", {"json": {}, "headers": {"If-Match": '"2"'}}),
        ("PUT", {"json": {}, "headers": {"If-None-Match": "*"}}),
        ("PATCH", {"data": b'{"a": "\xff"}', "headers": JSON}),
        ("PATCH", {"json": {"a": "\u0000"}}),
        ("DELETE", {"headers": {"If-Match": "nonsense"}}),
        ("PATCH", {"data": b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "headers": JSON}),
        ("PUT", {"data": _nested(1000), "headers": JSON}),
    ]
    for method, kwargs in attempts:
        response = api.request(method, RES, **kwargs)
        assert 400 <= response.status_code < 500, (method, kwargs, response.get_json())
    current = api.get(RES).get_json()
    assert (current["version"], current["data"]) == (1, {"keep": True})


def test_unknown_query_parameters_are_ignored_not_fatal(api: InProcessApi) -> None:
    for path in ("/v1/jobs?evil=1&__proto__=x", "/v1/resources/t?sql=%27%3B%20DROP%20TABLE"):
        response = api.get(path)
        assert response.status_code == 200, response.get_json()
        assert response.get_json() == {"items": [], "next_cursor": None}
        assert_security_headers(response)


def test_prefer_garbage_is_ignored_and_the_write_applies_once(
    service: Service, api: InProcessApi
) -> None:
    tenant_id = tenant_of(service, api)
    before = _counts(service, tenant_id)
    response = api.put(RES, json={}, headers={"Prefer": "wait=; respond-async, wait=-5, ,,=="})
    assert response.status_code == 201, response.get_json()
    after = _counts(service, tenant_id)
    assert after == {**before, "resources": before["resources"] + 1}


#: Codes a body that ends before its Content-Length may fairly be refused with (400).
TRUNCATED_CODES = {"malformed_body", "bad_request"}


@pytest.mark.parametrize("path", [BULK, RES])
@pytest.mark.parametrize("cut", ["half-body"])
def test_truncated_body_in_the_test_client_is_refused(
    service: Service, path: str, cut: str
) -> None:
    """Half a body is not acted on. (Werkzeug's test client sets Content-Length from the
    stream it is given, so a body that parses but falls short of its declared length is
    tested over a raw socket below.)"""
    api = service.api()
    tenant_id = tenant_of(service, api)
    body = orjson.dumps({"operations": [_op()]} if path == BULK else {"a": 1})
    sent, declared = (
        (body[: len(body) // 2], len(body)) if cut == "half-body" else (body, len(body) + 1000)
    )
    before = _counts(service, tenant_id)
    response = api.request(
        "POST" if path == BULK else "PUT",
        path,
        input_stream=io.BytesIO(sent),
        headers={**JSON, "Content-Length": str(declared)},
    )
    problem = response.get_json(force=True, silent=True) or {}
    assert response.status_code == 400, (response.status_code, problem)
    assert_clean_problem(response, 400, problem.get("code", ""))
    assert problem["code"] in TRUNCATED_CODES, problem
    assert _counts(service, tenant_id) == before


def test_body_over_the_size_limit_is_payload_too_large(limited: Service) -> None:
    api = limited.api(f"hostile-{uuid.uuid4().hex[:10]}")
    tenant_id = tenant_of(limited, api)
    before = _counts(limited, tenant_id)
    padding = "x" * (SMALL_MAX_BODY_BYTES * 4)
    for content_type, body in [
        ("application/json", orjson.dumps({"operations": [_op(data={"p": padding})]})),
        ("application/x-ndjson", orjson.dumps(_op(data={"p": padding})) + b"\n"),
        ("application/json", b" " * (SMALL_MAX_BODY_BYTES + 1)),
    ]:
        response = api.post(BULK, data=body, headers={"Content-Type": content_type})
        assert_clean_problem(response, 413, "payload_too_large")
    assert _counts(limited, tenant_id) == before


# --- over a real socket ------------------------------------------------------------


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, str, str]]:
    """`bulkapi serve` (embedded, SQLite) on 127.0.0.1; yields host, port, key, db url."""
    tmp: Path = tmp_path_factory.mktemp("hostile-server")
    with embedded_server(tmp, BULKAPI_BODY_TIMEOUT=str(SLOW_BODY_LIMIT)) as server:
        yield server.host, server.port, server.key, server.database_url


def _raw_exchange(host: str, port: int, head: bytes, body: bytes) -> bytes:
    """Send a request whose body ends early, close our side, and read the whole answer."""
    with socket.create_connection((host, port), timeout=WAIT_SECONDS) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


#: The body time limit of the real server (seconds): a slow upload must end in 408.
SLOW_BODY_LIMIT = 2


def _slow_exchange(host: str, port: int, head: bytes, body: bytes) -> bytes:
    """Send the head, then trickle the body a byte every 0.2 s until the server answers."""
    with socket.create_connection((host, port), timeout=WAIT_SECONDS) as sock:
        sock.sendall(head)
        sock.settimeout(0.2)
        chunks: list[bytes] = []
        deadline = time.monotonic() + WAIT_SECONDS
        for byte in body:
            if time.monotonic() > deadline:
                break
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                sock.sendall(bytes([byte]))
                continue
            chunks.append(chunk)
            break
        # Read the rest of the answer: its headers, then Content-Length bytes of body.
        sock.settimeout(WAIT_SECONDS)
        answer = b"".join(chunks)
        while answer and b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        while length is not None and len(body) < int(length.group(1)):
            body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("path", [BULK, RES])
def test_a_body_trickled_slowly_is_cut_off_with_408_and_changes_nothing(
    real_server: tuple[str, int, str, str], path: str
) -> None:
    host, port, key, url = real_server
    # Long enough that trickling it all would take far longer than the limit.
    body = orjson.dumps({"operations": [_op(data={"pad": "x" * 2000})]})
    method = b"POST" if path == BULK else b"PUT"
    head = (
        method + b" " + path.encode() + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n"
    )
    before = row_count(url)
    answer = _slow_exchange(host, port, head, body)
    status_line, _, rest = answer.partition(b"\r\n")
    assert int(status_line.split()[1]) == 408, answer[:2000]
    assert b"request_timeout" in rest
    assert b"application/problem+json" in rest.lower()
    assert row_count(url) == before


@pytest.mark.parametrize("path", [BULK, RES])
def test_truncated_body_over_a_socket_is_refused_without_a_500(
    real_server: tuple[str, int, str, str], path: str
) -> None:
    host, port, key, url = real_server
    body = orjson.dumps({"operations": [_op()]} if path == BULK else {"a": 1})
    method = b"POST" if path == BULK else b"PUT"
    head = (
        method + b" " + path.encode() + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body) + 1000).encode() + b"\r\n"
        b"Connection: close\r\n\r\n"
    )
    before = row_count(url)
    answer = _raw_exchange(host, port, head, body)
    if answer:  # a server may also just drop a request whose body never arrived
        status_line, _, rest = answer.partition(b"\r\n")
        status = int(status_line.split()[1])
        assert 400 <= status < 500, answer[:2000]
        assert b"application/problem+json" in rest.lower(), answer[:2000]
        assert b"Traceback" not in answer
    assert row_count(url) == before


def test_an_ndjson_line_longer_than_any_document_is_refused_at_its_index(
    service: Service,
) -> None:
    api = service.api()
    tenant_id = tenant_of(service, api)
    before = _counts(service, tenant_id)
    limit = service.runtime.settings.max_document_bytes
    long_line = orjson.dumps(_op() | {"data": {"s": "x" * (limit + 8192)}})
    body = orjson.dumps(_op(id="first")) + b"\n" + long_line + b"\n"
    response = api.post("/v1/bulk", data=body, headers=NDJSON)
    assert response.status_code == 422, response.get_json()
    assert set(response.get_json()["errors"]) == {"1"}
    assert "Line longer" in response.get_json()["errors"]["1"]["_schema"][0]
    assert _counts(service, tenant_id) == before
