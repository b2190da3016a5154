"""What both clients share and that does no I/O of its own: requests as data, retry
decisions, the replayable NDJSON body, the Server-Sent Events decoder, resources."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any
from urllib.parse import quote

import httpx

from bulkapi.client.errors import (
    ConnectionFailed,
    IdempotencyKeyInUse,
    MethodNotAllowed,
    NotAcceptable,
    ProblemError,
    ServerError,
    TooManyRequests,
    Unimplemented,
    WaitTimeout,
)

NDJSON = "application/x-ndjson"
TERMINAL = frozenset({"succeeded", "partially_succeeded", "failed", "cancelled"})
#: Bytes of a submit body kept in memory before the copy kept for a retry moves to disk.
SPOOL_IN_MEMORY = 1024 * 1024
#: Bytes sent per chunk of a streamed submit body.
CHUNK_BYTES = 64 * 1024
#: Jobs asked for per page of ``jobs()`` unless told (the API's maximum).
JOBS_PAGE = 100
#: Seconds one long poll may wait on the server (its maximum is 60).
LONG_POLL_SECONDS = 30.0
#: Seconds an event stream may stay silent: the server sends a keep-alive every 15 s.
STREAM_READ_SECONDS = 45.0
#: Seconds before reconnecting to an event stream that did not say (its ``retry``).
DEFAULT_RECONNECT_SECONDS = 2.0
#: Answers to an events request meaning "no event stream here" (an older server, a
#: proxy): ``wait`` long polls instead.
NO_STREAM = (MethodNotAllowed, NotAcceptable, Unimplemented)


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


class ReplayableBody:
    """A request body produced lazily and sent again, byte for byte, on a retry.

    The bytes go out as they are produced and are also kept in a spooled temporary file
    (in memory up to ``SPOOL_IN_MEMORY``, then on disk), so a generator of operations is
    read once and never held in memory whole. A retry first sends what the file holds,
    then goes on with the generator where the previous try left it.
    """

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._copy: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        self._size = 0

    def chunks(self) -> Iterator[bytes]:
        """The whole body from its start, in chunks of about ``CHUNK_BYTES``."""
        sent = 0
        while sent < self._size:
            self._copy.seek(sent)
            chunk = self._copy.read(min(CHUNK_BYTES, self._size - sent))
            sent += len(chunk)
            yield chunk
        # A try can only be given up where this generator yields: by then the chunk is kept.
        pending: list[bytes] = []
        pending_size = 0
        for piece in self._pieces:
            pending.append(piece)
            pending_size += len(piece)
            if pending_size >= CHUNK_BYTES:
                yield self._keep(b"".join(pending))
                pending, pending_size = [], 0
        if pending:
            yield self._keep(b"".join(pending))

    def _keep(self, chunk: bytes) -> bytes:
        self._copy.seek(self._size)
        self._copy.write(chunk)
        self._size += len(chunk)
        return chunk

    def close(self) -> None:
        self._copy.close()


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


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One Server-Sent Event."""

    name: str
    data: str
    id: str | None


class EventDecoder:
    """Server-Sent Events from a stream's lines, as the HTML standard reads them.

    ``last_id`` moves only when an event is complete, so a connection that breaks in
    the middle of one resumes (``Last-Event-ID``) before it.
    """

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id
        #: Seconds the server asked to wait before reconnecting.
        self.reconnect = DEFAULT_RECONNECT_SECONDS
        self._name = ""
        self._data: list[str] = []
        self._id = last_id

    def feed(self, line: str) -> ServerEvent | None:
        """Take one line (without its end); the event it completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._name = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.reconnect = int(value) / 1000
        return None

    def _dispatch(self) -> ServerEvent | None:
        self.last_id = self._id
        name, data = self._name or "message", self._data
        self._name, self._data = "", []
        return ServerEvent(name, "\n".join(data), self.last_id) if data else None


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
    params = {"limit": str(page_size)}
    if status is not None:
        params["status"] = status
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/jobs", params, resendable=True)


def results_call(job_id: str, status: str | None) -> Call:
    params = {} if status is None else {"status": status}
    return Call("GET", job_path(job_id, "results"), params, {"Accept": NDJSON}, resendable=True)


class JobState:
    """The job representation the API last answered, and the fields most callers read."""

    def __init__(self, data: dict[str, Any]) -> None:
        #: The job as ``GET /v1/jobs/{id}`` answered it (every field of the contract).
        self.data = data
        token = data.get("status_token")
        #: The job-scoped read token (from the answer to the submit; None otherwise).
        self.status_token = None if token is None else str(token)

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def done(self) -> bool:
        """Whether the job is terminal: succeeded, partially_succeeded, failed or cancelled."""
        return self.status in TERMINAL

    @property
    def total(self) -> int:
        return int(self.data["total"])

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.data["counts"])

    @property
    def progress(self) -> float:
        return float(self.data["progress"])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.status} {self.progress:.0%}>"


class Follow:
    """Where ``wait`` stands: the time left, the events seen, stream or long poll."""

    def __init__(self, job: JobState, timeout: float | None, clock: Callable[[], float]) -> None:
        self._job = job
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self.decoder = EventDecoder()
        #: False once the server has shown it has no event stream: long polls instead.
        self.streaming = True
        #: Connections in a row that broke before bringing any event.
        self.fruitless = 0

    def left(self) -> float | None:
        """Seconds left (None: no limit); ``WaitTimeout`` once there are none."""
        if self._deadline is None:
            return None
        left = self._deadline - self._clock()
        if left <= 0:
            raise WaitTimeout(f"job {self._job.id} is still {self._job.status}")
        return left

    def _bounded(self, seconds: float) -> float:
        left = self.left()
        return seconds if left is None else min(seconds, left)

    def events_call(self) -> Call:
        headers = {"Accept": "text/event-stream"}
        if self.decoder.last_id is not None:
            headers["Last-Event-ID"] = self.decoder.last_id
        return Call(
            "GET",
            job_path(self._job.id, "events"),
            headers=headers,
            resendable=True,
            read_timeout=self._bounded(STREAM_READ_SECONDS) + 1,
        )

    def poll_call(self) -> Call:
        wait = self._bounded(LONG_POLL_SECONDS)
        return Call(
            "GET",
            job_path(self._job.id),
            {"wait": f"{wait:.0f}"},
            resendable=True,
            read_timeout=wait + STREAM_READ_SECONDS,
        )

    def opened(self, response: httpx.Response) -> bool:
        """Whether the answer is an event stream; if not, long polls take over."""
        kind = response.headers.get("Content-Type", "")
        self.streaming = response.status_code == 204 or kind.startswith("text/event-stream")
        return self.streaming

    def give_up_on_stream(self, error: ProblemError) -> None:
        """An events request refused as unknown here: long polls take over."""
        if not isinstance(error, NO_STREAM):
            raise error
        self.streaming = False

    def update(self, line: str) -> bool:
        """Take one line of the stream; whether it completed a job event (now in
        ``job.data``)."""
        event = self.decoder.feed(line)
        if event is None or event.name not in ("progress", "status"):
            return False
        self._job.data = json.loads(event.data)
        self.fruitless = 0
        return True

    def pause(self, policy: RetryPolicy, broken: bool) -> float:
        """Seconds to wait before connecting again after a stream ended (the server
        closes them now and then) or broke; ``ConnectionFailed`` after
        ``policy.attempts`` broken connections in a row that brought no event."""
        pause = self._bounded(self.decoder.reconnect)  # WaitTimeout first, once it is time
        self.fruitless += broken
        if self.fruitless >= policy.attempts:
            raise ConnectionFailed(f"the events of job {self._job.id} keep breaking off")
        return pause
