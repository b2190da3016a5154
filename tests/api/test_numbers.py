"""Numbers are stored as sent: an integer that orjson would read as a float (beyond the
64-bit range) is refused, not rounded; long runs of digits anywhere else are not."""

from __future__ import annotations

import orjson
import pytest

from tests.api.conftest import JSON, NDJSON, assert_problem
from tests.conftest import InProcessApi

RES = "/v1/resources/t/numbers"
#: One past each end of what orjson reads exactly: [-2**63, 2**64 - 1].
BEYOND = [b"18446744073709551616", b"-9223372036854775809", b"1" + b"0" * 40, b"9" * 5000]


def _bulk(data: bytes, metadata: bytes = b"{}") -> bytes:
    op = b'{"op": "upsert", "type": "t", "id": "n", "data": ' + data + b"}"
    return b'{"operations": [' + op + b'], "metadata": ' + metadata + b"}"


@pytest.mark.parametrize("number", BEYOND, ids=lambda n: n[:24].decode())
@pytest.mark.parametrize("where", ["put", "patch", "bulk-data", "bulk-metadata"])
def test_an_integer_beyond_64_bits_is_a_malformed_body(
    api: InProcessApi, number: bytes, where: str
) -> None:
    document = b'{"a": {"deep": [1, ' + number + b"]}}"
    if where == "patch":
        assert api.put(RES, json={"a": 1}).status_code in (200, 201)
    method, path, body = {
        "put": ("PUT", RES, document),
        "patch": ("PATCH", RES, document),
        "bulk-data": ("POST", "/v1/bulk", _bulk(document)),
        "bulk-metadata": ("POST", "/v1/bulk", _bulk(b"{}", document)),
    }[where]
    problem = assert_problem(
        api.request(method, path, data=body, headers=JSON), 400, "malformed_body"
    )
    assert "64-bit" in problem["detail"] or "not valid JSON" in problem["detail"], problem


def test_an_ndjson_line_with_such_an_integer_is_refused_at_its_index(api: InProcessApi) -> None:
    lines = [
        b'{"op": "upsert", "type": "t", "id": "a", "data": {"n": 1}}',
        b'{"op": "upsert", "type": "t", "id": "b", "data": {"n": 18446744073709551616}}',
        b'{"op": "upsert", "type": "t", "id": "c", "data": {"s": "18446744073709551616"}}',
    ]
    response = api.post("/v1/bulk", data=b"\n".join(lines) + b"\n", headers=NDJSON)
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"] == {"1": {"_schema": ["Holds an integer outside the 64-bit range."]}}


#: Long digit runs that are not integers beyond 64 bits, and the range's own ends.
AS_SENT = {
    "digits": "123456789012345678901234567890",
    "float": 0.12345678901234567890123,
    "exponent": 1.5e300,
    "u64_max": 2**64 - 1,
    "i64_min": -(2**63),
    "key_123456789012345678901234567890": True,
}


def test_digits_in_strings_floats_and_the_range_ends_are_stored_as_sent(
    api: InProcessApi,
) -> None:
    raw = orjson.dumps(AS_SENT)
    assert api.put(RES, data=raw, headers=JSON).status_code == 201
    assert api.get(RES).get_json()["data"] == orjson.loads(raw)
    line = orjson.dumps({"op": "upsert", "type": "t", "id": "bulk", "data": AS_SENT})
    job = api.post("/v1/bulk", data=line + b"\n", headers=NDJSON)
    assert job.status_code == 202, job.get_json()
    assert api.wait_job(job.get_json()["id"])["status"] == "succeeded"
    assert orjson.loads(api.get("/v1/resources/t/bulk").data)["data"] == AS_SENT
