"""What both clients share and that does no I/O of its own: requests as data, which
failures to try again and when, resources."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from bulkapi.client._body import ReplayableBody
from bulkapi.client.errors import (
    ConnectionFailed,
    IdempotencyKeyInUse,
    ProblemError,
    ServerError,
    TooManyRequests,
)

NDJSON = "application/x-ndjson"
#: Jobs asked for per page of ``jobs()`` unless told (the API's maximum).
JOBS_PAGE = 100


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a request is tried again after a 429, a 503 or a broken connection.

    ``attempts`` bounds the tries of one request (the first included) and ``max_wait``
    the seconds slept between them; a ``Retry-After`` longer than what is left of
    ``max_wait`` is not waited for: the error is raised at once.
    """

    attempts: int = 5
    max_wait: float = 60.0
    #: Seconds before the first retry when the answer gives no ``Retry-After`` (doubling).
    backoff: float = 0.5

    def delay(self, attempt: int, waited: float, asked: float | None) -> float | None:
        """Seconds to sleep before try ``attempt + 1``, or None to give up."""
        if attempt >= self.attempts:
            return None
        wanted = asked if asked is not None else self.backoff * 2 ** (attempt - 1)
        return wanted if waited + wanted <= self.max_wait else None


#: The retry policy of a client that was given none.
DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class Call:
    """One API request, ready to be sent (again, on a retry)."""

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    #: A body sent again from the start on every try (a submit's operations).
    body: ReplayableBody | None = None
    #: Whether a broken connection may have left the request half done and it is still
    #: safe to send again: reads, and submits (their Idempotency-Key makes them so).
    #: Other writes are sent again only when the connection was never made.
    resendable: bool = False
    read_timeout: float | None = None

    def should_retry(self, error: ProblemError) -> bool:
        """Whether an error answer is worth another try: 429 and 503 always, and a
        submit whose Idempotency-Key is still in use by its own earlier try."""
        if isinstance(error, TooManyRequests | ServerError) and error.status in (429, 503):
            return True
        return self.body is not None and isinstance(error, IdempotencyKeyInUse)

    def may_resend(self, error: httpx.TransportError) -> bool:
        return self.resendable or isinstance(error, httpx.ConnectError)


def resource_path(rtype: str, rid: str) -> str:
    return f"/v1/resources/{quote(rtype, safe='')}/{quote(rid, safe='')}"


def job_path(job_id: str, *rest: str) -> str:
    return "/".join([f"/v1/jobs/{quote(job_id, safe='')}", *rest])


def resource_call(
    method: str,
    rtype: str,
    rid: str,
    document: Mapping[str, Any] | None = None,
    *,
    if_version: int | None = None,
    wait: float | None = None,
) -> Call:
    """A request on one resource: GET, PUT, PATCH (``document`` a merge patch) or DELETE,
    with ``If-Match`` for ``if_version`` and ``Prefer: wait=N`` for ``wait``."""
    headers = {}
    if method == "PATCH":
        headers["Content-Type"] = "application/merge-patch+json"
    if if_version is not None:
        headers["If-Match"] = f'"{if_version}"'
    if wait is not None:
        headers["Prefer"] = f"wait={wait:g}"
    path = resource_path(rtype, rid)
    return Call(method, path, headers=headers, json=document, resendable=method == "GET")


def job_call(job_id: str, action: str | None = None) -> Call:
    """GET the job, or POST one of its actions (``cancel``)."""
    if action is None:
        return Call("GET", job_path(job_id), resendable=True)
    return Call("POST", job_path(job_id, action))


def deadline_text(deadline: datetime | float | str | None) -> str | None:
    """The ``deadline`` as the API takes it: an RFC 3339 time or seconds from now."""
    if deadline is None or isinstance(deadline, str):
        return deadline
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None:
            raise ValueError("deadline must carry a time zone")
        return deadline.isoformat()
    return f"{deadline:g}"


def submit_call(
    operations: Iterable[Mapping[str, Any]],
    idempotency_key: str | None,
    callback_url: str | None,
    deadline: datetime | float | str | None,
    metadata: Mapping[str, Any] | None,
) -> Call:
    """POST /v1/bulk streaming ``operations``: NDJSON, or a JSON envelope when there is
    ``metadata`` (NDJSON has no place for it)."""
    if metadata is None:
        lines = (_dumps(operation) for operation in operations)
        return lines_call(lines, idempotency_key, callback_url, deadline)
    envelope = {"callback_url": callback_url, "deadline": deadline_text(deadline)}
    pieces = _envelope(operations, {**envelope, "metadata": metadata})
    return _bulk_call(pieces, "application/json", {}, idempotency_key)


def lines_call(
    lines: Iterable[bytes],
    idempotency_key: str | None,
    callback_url: str | None,
    deadline: datetime | float | str | None,
) -> Call:
    """POST /v1/bulk streaming ``lines`` (one serialized operation each) as NDJSON."""
    params = {
        name: value
        for name, value in (("callback_url", callback_url), ("deadline", deadline_text(deadline)))
        if value is not None
    }
    pieces = (line if line.endswith(b"\n") else line + b"\n" for line in lines)
    return _bulk_call(pieces, NDJSON, params, idempotency_key)


def _bulk_call(
    pieces: Iterator[bytes], kind: str, params: dict[str, str], idempotency_key: str | None
) -> Call:
    """Every submit carries an Idempotency-Key, so that sending it again is safe."""
    headers = {
        "Content-Type": kind,
        "Idempotency-Key": idempotency_key or f"sdk-{uuid.uuid4()}",
    }
    return Call("POST", "/v1/bulk", params, headers, body=ReplayableBody(pieces), resendable=True)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _envelope(operations: Iterable[Mapping[str, Any]], rest: Mapping[str, Any]) -> Iterator[bytes]:
    yield b'{"operations":['
    for number, operation in enumerate(operations):
        yield b"," + _dumps(operation) if number else _dumps(operation)
    yield b"]," + _dumps({name: value for name, value in rest.items() if value is not None})[1:]


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource as the API answered it (``data`` is None after a delete)."""

    type: str
    id: str
    version: int
    data: dict[str, Any] | None
    updated_at: str | None = None


def resource_of(rtype: str, rid: str, response: httpx.Response) -> Resource:
    """The resource a 200/201 answer carries, or (204 to a delete) its ETag's version."""
    if response.status_code == 204:
        return Resource(rtype, rid, int(response.headers["ETag"].strip('W/"')), None)
    body = response.json()
    return Resource(body["type"], body["id"], body["version"], body["data"], body["updated_at"])


def ndjson_items(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip():
            yield json.loads(line)


def next_delay(
    call: Call,
    policy: RetryPolicy,
    attempt: int,
    waited: float,
    failure: ProblemError | httpx.TransportError,
) -> float:
    """Seconds to sleep before trying ``call`` again after ``failure``, or raise what
    the caller should see (the problem, or ``ConnectionFailed``)."""
    if isinstance(failure, ProblemError):
        delay = (
            policy.delay(attempt, waited, failure.retry_after)
            if call.should_retry(failure)
            else None
        )
        if delay is None:
            raise failure
        return delay
    delay = policy.delay(attempt, waited, None) if call.may_resend(failure) else None
    if delay is None:
        raise ConnectionFailed(f"{call.method} {call.path}: {failure!r}") from failure
    return delay


def request_options(call: Call, timeout: float) -> dict[str, Any]:
    """What ``build_request`` takes for ``call``, its body aside (``timeout``: seconds
    for each step of a request; a long poll or a stream may read for longer)."""
    return {
        "method": call.method,
        "url": call.path,
        "params": call.params,
        "headers": call.headers,
        "json": call.json,
        "timeout": httpx.Timeout(timeout, read=call.read_timeout or timeout),
    }


def jobs_call(status: str | None, cursor: str | None, page_size: int) -> Call:
    params = _page(cursor, page_size)
    if status is not None:
        params["status"] = status
    return Call("GET", "/v1/jobs", params, resendable=True)


def retry_call(job_id: str, codes: Sequence[str] | None, idempotency_key: str | None) -> Call:
    """POST a retry of the job's failed and cancelled operations (those with ``codes``).
    Its Idempotency-Key makes sending it again safe."""
    headers = {"Idempotency-Key": idempotency_key or f"sdk-{uuid.uuid4()}"}
    body = None if codes is None else {"codes": list(codes)}
    return Call("POST", job_path(job_id, "retry"), headers=headers, json=body, resendable=True)


def dry_run_call(call: Call) -> Call:
    """The same submit, checked only (``dry_run=true``): nothing is recorded."""
    return dataclasses.replace(call, params={**call.params, "dry_run": "true"})


def history_call(rtype: str, rid: str, cursor: str | None, page_size: int) -> Call:
    path = resource_path(rtype, rid) + "/history"
    return Call("GET", path, _page(cursor, page_size), resendable=True)


def _page(cursor: str | None, page_size: int) -> dict[str, str]:
    params = {"limit": str(page_size)}
    if cursor is not None:
        params["cursor"] = cursor
    return params


def results_call(job_id: str, status: str | None) -> Call:
    params = {} if status is None else {"status": status}
    return Call("GET", job_path(job_id, "results"), params, {"Accept": NDJSON}, resendable=True)
