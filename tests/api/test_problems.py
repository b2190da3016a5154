"""Every error is an RFC 9457 problem, and no request, however malformed, yields a 500."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from tests.api.conftest import JSON, NDJSON, PROBLEM_FIELDS, assert_problem
from tests.conftest import InProcessApi


def _cursor(position: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": position})).decode().rstrip("=")


def _bulk(**op: Any) -> dict[str, Any]:
    return {"json": {"operations": [{"op": "upsert", "type": "t", "id": "i", "data": {}, **op}]}}


def test_unknown_path_is_a_not_found_problem(api: InProcessApi) -> None:
    assert_problem(api.get("/v1/nothing-here"), 404, "not_found")
    assert_problem(api.get("/v1/resources/a/b/c"), 404, "not_found")


def test_unsupported_method_is_a_method_not_allowed_problem(api: InProcessApi) -> None:
    response = api.delete("/v1/jobs")
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]
    assert_problem(api.get("/v1/bulk"), 405, "method_not_allowed")
    assert_problem(api.post("/v1/resources/t/i", json={}), 405, "method_not_allowed")


#: Requests a careless or hostile client might send: some are fine, none may be a 500.
MALFORMED: list[Any] = [
    ("PUT", "/v1/resources/t/i", {"data": b"\x00\x01", "headers": JSON}),
    ("PUT", "/v1/resources/t/i", {"data": b"[" * 5000 + b"]" * 5000, "headers": JSON}),
    ("PUT", "/v1/resources/t/i", {"data": b'{"a": NaN}', "headers": JSON}),
    ("PUT", "/v1/resources/t/i", {"data": b'{"a": 1e999}', "headers": JSON}),
    ("PUT", "/v1/resources/t/i", {"data": b'{"a": 1' + b"0" * 40 + b"}", "headers": JSON}),
    ("PUT", "/v1/resources/t/i", {"json": {}, "headers": {"If-Match": "*"}}),
    ("PUT", "/v1/resources/t/i", {"json": {}, "headers": {"If-Match": '"99999999999999999999"'}}),
    ("PUT", "/v1/resources/t/i", {"json": {}, "headers": {"Prefer": "wait=abc"}}),
    (
        "PUT",
        "/v1/resources/t/i",
        {"json": {}, "headers": {"Content-Type": "application/json; charset=klingon"}},
    ),
    ("PATCH", "/v1/resources/t/i", {"data": b"", "headers": JSON}),
    ("DELETE", "/v1/resources/t/i", {"headers": {"If-Match": "garbage"}}),
    ("GET", "/v1/resources/t/" + "x" * 5000, {}),
    ("GET", "/v1/resources/t?limit=99999999999999999999999", {}),
    ("GET", "/v1/resources/t?cursor=" + "A" * 600, {}),
    ("GET", "/v1/resources/t?cursor=" + _cursor(None), {}),
    ("GET", "/v1/resources/t?cursor=" + _cursor([1]), {}),
    ("GET", "/v1/resources/t?cursor=" + base64.urlsafe_b64encode(b"\xff\xfe").decode(), {}),
    ("GET", "/v1/jobs?cursor=" + _cursor({"x": 1}), {}),
    ("GET", "/v1/jobs/" + "j" * 5000, {}),
    ("GET", "/v1/jobs/job_x?wait=nan", {}),
    ("GET", "/v1/jobs/job_x?wait=inf", {}),
    ("GET", "/v1/jobs/job_x/results?cursor=" + _cursor(1.5), {}),
    ("GET", "/v1/jobs/job_x/results?cursor=" + _cursor(True), {}),
    ("POST", "/v1/bulk", {"json": {"operations": [None, 1, "x", [], {}]}}),
    ("POST", "/v1/bulk", {"json": {"operations": [{"op": ["upsert"], "type": {}, "id": []}]}}),
    ("POST", "/v1/bulk", {"json": {"operations": [{"op": None, "type": None, "id": None}]}}),
    ("POST", "/v1/bulk", _bulk(data={"deep": [[[[[[[[[[1]]]]]]]]]]})),
    ("POST", "/v1/bulk", _bulk(if_version=1.0)),
    ("POST", "/v1/bulk", _bulk(if_version=None, extra=None)),
    ("POST", "/v1/bulk", {"data": b"\xff\xfe\n{}\n", "headers": NDJSON}),
    ("POST", "/v1/bulk", {"data": b"[1]\n2\nnull\n", "headers": NDJSON}),
    ("POST", "/v1/bulk", {"data": b'{"operations": []}', "headers": {"Content-Type": "json"}}),
    ("POST", "/v1/bulk?callback_url=" + "h" * 3000, {"data": b"{}", "headers": NDJSON}),
    ("POST", "/v1/bulk", {"json": {"operations": [], "callback_url": "http://"}}),
    ("GET", "/docs/assets/../../../../etc/passwd", {}),
    ("GET", "/docs/assets/%2e%2e/%2e%2e/etc/passwd", {}),
    ("TRACE", "/v1/jobs", {}),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    MALFORMED,
    ids=[f"{n}-{m} {p[:40]}" for n, (m, p, _) in enumerate(MALFORMED)],
)
def test_odd_request_is_never_a_500_and_any_error_is_a_problem(
    api: InProcessApi, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = api.request(method, path, **kwargs)
    assert response.status_code < 500, (response.status_code, response.data[:500])
    if response.status_code >= 400:
        body = response.get_json(force=True)
        assert response.mimetype == "application/problem+json"
        assert body.keys() >= PROBLEM_FIELDS
        assert body["status"] == response.status_code


#: JSON the API may accept at the HTTP layer but that a database may choke on.
EDGE_DOCUMENTS = [
    pytest.param(b'{"text": "nul \\u0000 inside"}', id="nul-in-string"),
    pytest.param(b'{"nul\\u0000key": 1}', id="nul-in-key"),
    pytest.param(b'{"big": 18446744073709551615}', id="u64-integer"),
    pytest.param(b'{"small": -9223372036854775808}', id="i64-min-integer"),
    pytest.param('{"emoji": "\U0001f600", "rtl": "\u202e"}'.encode(), id="astral-unicode"),
    pytest.param(b'{"lone": "\\ud800"}', id="lone-surrogate"),
]


@pytest.mark.parametrize("raw", EDGE_DOCUMENTS)
def test_sync_write_of_an_unusual_document_is_never_a_500(api: InProcessApi, raw: bytes) -> None:
    response = api.put("/v1/resources/t/i", data=raw, headers=JSON)
    assert response.status_code < 500, response.get_json()
    if response.status_code == 201:
        assert api.get("/v1/resources/t/i").get_json()["data"] == orjson.loads(raw)


@pytest.mark.parametrize("raw", EDGE_DOCUMENTS)
def test_bulk_write_of_an_unusual_document_is_never_a_500(api: InProcessApi, raw: bytes) -> None:
    body = b'{"operations": [{"op": "upsert", "type": "t", "id": "i", "data": ' + raw + b"}]}"
    response = api.post("/v1/bulk", data=body, headers=JSON)
    assert response.status_code < 500, response.get_json()
    if response.status_code == 202:
        assert api.wait_job(response.get_json()["id"])["status"] == "succeeded"
        assert api.get("/v1/resources/t/i").get_json()["data"] == orjson.loads(raw)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"metadata": {"note": "nul \u0000"}}, id="nul-in-metadata"),
        pytest.param({"callback_url": "https://example.com/\u0000"}, id="nul-in-callback-url"),
    ],
)
def test_bulk_envelope_with_nul_characters_is_never_a_500(
    api: InProcessApi, extra: dict[str, Any]
) -> None:
    operations = [{"op": "upsert", "type": "t", "id": "i", "data": {}}]
    response = api.post("/v1/bulk", json={"operations": operations, **extra})
    assert response.status_code < 500, response.get_json()


@pytest.mark.parametrize("if_version", [2**31, 2**63 - 1, 2**64 - 1])
def test_bulk_if_version_beyond_32_bits_is_never_a_500(api: InProcessApi, if_version: int) -> None:
    response = api.post("/v1/bulk", **_bulk(if_version=if_version))
    assert response.status_code < 500, response.get_json()
    if response.status_code == 202:
        job = api.wait_job(response.get_json()["id"])
        assert job["status"] == "failed"
        assert api.results(job["id"])[0]["error"]["code"] == "version_mismatch"


@pytest.mark.parametrize("position", [2**31, 2**63, 2**64 - 1])
def test_results_cursor_with_a_huge_number_is_never_a_500(api: InProcessApi, position: int) -> None:
    job = api.submit([{"op": "upsert", "type": "t", "id": "i", "data": {}}])
    response = api.get(f"/v1/jobs/{job['id']}/results?cursor={_cursor(position)}")
    assert response.status_code < 500, response.get_json()


def test_if_match_with_a_huge_version_is_a_version_mismatch(api: InProcessApi) -> None:
    api.put("/v1/resources/t/i", json={})
    response = api.put("/v1/resources/t/i", json={}, headers={"If-Match": f'"{2**80}"'})
    assert_problem(response, 412, "version_mismatch")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/job%00x"),
        ("GET", "/v1/jobs/job%00x/results"),
        ("POST", "/v1/jobs/job%00x/cancel"),
    ],
)
def test_job_id_with_a_nul_character_is_not_found(
    api: InProcessApi, method: str, path: str
) -> None:
    assert_problem(api.request(method, path), 404, "not_found")


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/resources/t"])
def test_list_cursor_with_a_nul_character_is_never_a_500(api: InProcessApi, path: str) -> None:
    cursor = _cursor("a\u0000b")
    response = api.get(f"{path}?cursor={cursor}")
    assert response.status_code < 500, response.get_json()
