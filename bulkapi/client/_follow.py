"""Following a job: its state, the Server-Sent Events decoder, and where ``wait`` stands."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bulkapi.client._wire import Call, RetryPolicy, job_path
from bulkapi.client.errors import (
    ConnectionFailed,
    MethodNotAllowed,
    NotAcceptable,
    ProblemError,
    Unimplemented,
    WaitTimeout,
)

#: The statuses a job ends in.
TERMINAL = frozenset({"succeeded", "partially_succeeded", "failed", "cancelled"})
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

    @property
    def retry_of(self) -> str | None:
        """The job this one retries the failed operations of, if any."""
        found = self.data.get("retry_of")
        return None if found is None else str(found)

    @property
    def retried_by(self) -> list[str]:
        """The jobs that retried this one's failed operations, newest last."""
        return [str(job_id) for job_id in self.data.get("retried_by") or ()]

    @property
    def waiting_on(self) -> list[dict[str, Any]]:
        """Other jobs whose earlier operations this one waits behind (``job_id``,
        ``operations``), as the last single-job read saw them; empty when none."""
        return list(self.data.get("waiting_on") or ())

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
