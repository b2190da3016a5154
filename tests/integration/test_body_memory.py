"""Memory per request: refusing a bulk body at the size limit costs the API process less
than three times the body, whatever the body's shape.

Each case runs against a fresh `bulkapi serve` (so memory one case freed cannot hide the
next case's growth); the peak resident size of its worker process is reset through
``/proc/PID/clear_refs`` just before the request, and read back (``VmHWM``) after it.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.support import WAIT_SECONDS, RealServer, embedded_server, wait_until

#: The servers' body limit: large enough that the body dwarfs the process's own noise.
LIMIT = 8 * 1024 * 1024
#: Peak growth allowed, as a multiple of the body's (inflated) size.
GROWTH_FACTOR = 3
#: The servers' document limit, in the defaults' ratio to the body limit (one to 1024):
#: an operation too long to be valid is decoded alone, at a cost that follows it.
DOCUMENT_LIMIT = LIMIT // 1024
#: The servers' operation limit (the default).
MAX_OPERATIONS = 100_000
OP = b'{"op":"upsert","type":"t","id":"i%d","data":{}}'


def _repeat_to_limit(head: bytes, item: bytes, separator: bytes, tail: bytes) -> bytes:
    """``head`` + as many ``item`` as fit under the limit + ``tail``."""
    count = (LIMIT - len(head) - len(tail)) // (len(item) + len(separator))
    return head + separator.join([item] * count) + tail


def _numbered_to_limit(head: bytes, separator: bytes, tail: bytes) -> bytes:
    parts: list[bytes] = []
    size = len(head) + len(tail)
    number = 0
    while True:
        item = OP % number
        if size + len(item) + len(separator) > LIMIT:
            break
        parts.append(item)
        size += len(item) + len(separator)
        number += 1
    return head + separator.join(parts) + tail


def _large_operations_of_empty_objects() -> bytes:
    """Operations too large to be valid but small enough to be decoded one at a time."""
    item = b'{"op":"upsert","type":"t","id":"i%d","data":{"a":[' + b",".join([b"{}"] * 16_000)
    items = [item % number + b"]}}" for number in range(LIMIT // len(item) - 1)]
    return b'{"operations":[' + b",".join(items) + b"]}"


def _one_operation_of_empty_objects() -> bytes:
    head = b'{"operations":[{"op":"upsert","type":"t","id":"i","data":{"a":['
    return _repeat_to_limit(head, b"{}", b",", b"]}}]}")


#: (body, Content-Type, Content-Encoding, expected status and code)
CASES: dict[str, Callable[[], tuple[bytes, str, str | None, int, str]]] = {
    "json-empty-items": lambda: (
        _repeat_to_limit(b'{"operations":[', b"{}", b",", b"]}"),
        "application/json",
        None,
        413,
        "too_many_operations",
    ),
    "json-operations": lambda: (
        _numbered_to_limit(b'{"operations":[', b",", b"]}"),
        "application/json",
        None,
        413,
        "too_many_operations",
    ),
    "json-one-operation-of-empty-objects": lambda: (
        _one_operation_of_empty_objects(),
        "application/json",
        None,
        422,
        "validation_error",
    ),
    "json-large-operations-of-empty-objects": lambda: (
        _large_operations_of_empty_objects(),
        "application/json",
        None,
        422,
        "validation_error",
    ),
    "json-metadata-of-empty-objects": lambda: (
        _repeat_to_limit(b'{"operations":[' + OP % 0 + b'],"metadata":{"a":[', b"{}", b",", b"]}}"),
        "application/json",
        None,
        422,
        "validation_error",
    ),
    "ndjson-empty-items": lambda: (
        _repeat_to_limit(b"", b"{}", b"\n", b"\n"),
        "application/x-ndjson",
        None,
        413,
        "too_many_operations",
    ),
    "ndjson-operations": lambda: (
        _numbered_to_limit(b"", b"\n", b"\n"),
        "application/x-ndjson",
        None,
        413,
        "too_many_operations",
    ),
    "gzip-bomb": lambda: (
        gzip.compress(b"\n" * (4 * LIMIT), compresslevel=9),
        "application/x-ndjson",
        "gzip",
        413,
        "payload_too_large",
    ),
}


def _worker_pid(server: RealServer) -> int:
    """The one gunicorn worker of an embedded server (the process that handles requests)."""
    return int(wait_until(server.process.children, what="the gunicorn worker")[0])


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.parametrize("case", list(CASES))
def test_refusing_a_body_at_the_limit_costs_less_than_three_times_the_body(
    tmp_path: Path, case: str
) -> None:
    body, content_type, coding, status, code = CASES[case]()
    assert len(body) <= LIMIT
    headers = {"Content-Type": content_type} | ({"Content-Encoding": coding} if coding else {})
    with embedded_server(
        tmp_path,
        BULKAPI_MAX_BODY_BYTES=str(LIMIT),
        BULKAPI_MAX_DOCUMENT_BYTES=str(DOCUMENT_LIMIT),
    ) as server:
        auth = {"Authorization": f"Bearer {server.key}"}
        warm = requests.post(
            server.base_url + "/v1/bulk",
            data=OP % 0 + b"\n",
            headers=auth | {"Content-Type": "application/x-ndjson"},
            timeout=WAIT_SECONDS,
        )
        assert warm.status_code == 202, warm.text
        pid = _worker_pid(server)
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak := current resident size
        before = _status_kb(pid, "VmRSS")
        response = requests.post(
            server.base_url + "/v1/bulk", data=body, headers=auth | headers, timeout=WAIT_SECONDS
        )
        growth = (_status_kb(pid, "VmHWM") - before) * 1024
    assert response.status_code == status, response.text[:2000]
    assert response.json()["code"] == code
    size = LIMIT if coding else len(body)
    assert growth < GROWTH_FACTOR * size, f"grew {growth / 2**20:.0f} MiB for {size / 2**20:.0f}"
