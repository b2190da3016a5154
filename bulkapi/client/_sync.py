"""``Client`` and its ``Job``: the blocking client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from bulkapi import __version__
from bulkapi.client._follow import Follow, JobState
from bulkapi.client._wire import (
    DEFAULT_RETRY,
    JOBS_PAGE,
    Call,
    Resource,
    RetryPolicy,
    dry_run_call,
    history_call,
    job_call,
    jobs_call,
    lines_call,
    ndjson_items,
    next_delay,
    request_options,
    resource_call,
    resource_of,
    results_call,
    retry_call,
    submit_call,
)
from bulkapi.client.errors import ConnectionFailed, ProblemError, problem_error

#: Seconds for each step of a request (connect, send, read) unless a call says otherwise.
DEFAULT_TIMEOUT = 60.0


class Job(JobState):
    """A bulk job: its last known state (``data``, ``status``, ``counts`` ...) and what
    can be done with it."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        super().__init__(data)
        self._client = client

    def refresh(self) -> Job:
        """Read the job's current state."""
        self.data = self._client._send(job_call(self.id)).json()
        return self

    def wait(
        self, timeout: float | None = None, on_progress: Callable[[Job], object] | None = None
    ) -> Job:
        """Follow the job until it is terminal and return it; ``on_progress(job)`` is
        called on every status change and progress the service reports.

        Follows the job's event stream, resuming after the last event seen when the
        connection drops; long polls when the service has no stream. ``WaitTimeout``
        after ``timeout`` seconds (the job goes on).
        """
        follow = Follow(self, timeout, time.monotonic)
        while not self.done:
            if not follow.streaming:
                self.data = self._client._send(follow.poll_call()).json()
                if on_progress is not None:
                    on_progress(self)
                continue
            try:
                self._follow_stream(follow, on_progress)
            except httpx.TransportError:
                if not self.done:
                    time.sleep(follow.pause(self._client.retry, broken=True))
                continue
            if follow.streaming and not self.done:
                time.sleep(follow.pause(self._client.retry, broken=False))
        return self

    def _follow_stream(self, follow: Follow, on_progress: Callable[[Job], object] | None) -> None:
        try:
            response = self._client._send(follow.events_call(), stream=True)
        except ProblemError as error:
            follow.give_up_on_stream(error)
            return
        try:
            if response.status_code == 204:  # resumed after the terminal event
                self.refresh()
            elif follow.opened(response):
                for line in response.iter_lines():
                    if follow.update(line) and on_progress is not None:
                        on_progress(self)
                    if self.done:
                        return
                    follow.left()
        finally:
            response.close()

    def results(self, status: str | None = None) -> Iterator[dict[str, Any]]:
        """Every operation's result in request order, read lazily from one NDJSON
        stream; only those with ``status`` (succeeded, failed, cancelled, pending)."""
        response = self._client._send(results_call(self.id, status), stream=True)
        try:
            yield from ndjson_items(response.iter_lines())
        except httpx.TransportError as error:
            raise ConnectionFailed(f"results of job {self.id}: {error!r}") from error
        finally:
            response.close()

    def cancel(self) -> Job:
        """Cancel the operations not yet applied (``JobFinished`` if it ended otherwise)."""
        self.data = self._client._send(job_call(self.id, "cancel")).json()
        return self

    def retry(
        self, codes: Sequence[str] | None = None, *, idempotency_key: str | None = None
    ) -> Job:
        """A new job of this finished job's failed and cancelled operations (only those
        whose error code is in ``codes``; ``cancelled`` for plain cancels), in their
        order; ``JobNotFinished`` while it runs, ``NothingToRetry`` if none matches."""
        call = retry_call(self.id, codes, idempotency_key)
        return Job(self._client, self._client._send(call).json())


class Client:
    """A blocking client of one bulkapi service, authenticated with one API key (or a
    job's status token, which reads that job only). Use it as a context manager, or
    ``close()`` it."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {api_key}",
                "User-Agent": f"bulkapi-client/{__version__}",
            },
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        """Send ``call``, again after a 429, 503 or broken connection as ``retry`` allows;
        the successful answer, or the error."""
        attempt, waited = 1, 0.0
        while True:
            content = None if call.body is None else call.body.chunks()
            request = self._http.build_request(
                content=content, **request_options(call, self._timeout)
            )
            failure: ProblemError | httpx.TransportError
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as error:
                failure = error
            else:
                if response.status_code < 400:
                    return response
                response.read()
                response.close()
                failure = problem_error(response)
            delay = next_delay(call, self.retry, attempt, waited, failure)
            time.sleep(delay)
            attempt, waited = attempt + 1, waited + delay

    def submit(
        self,
        operations: Iterable[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        deadline: datetime | float | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Job:
        """Submit ``operations`` (a list, or any iterable: read once, streamed) as one
        bulk job; the accepted job.

        Every submit carries an Idempotency-Key (a new one unless given), so trying it
        again after a broken connection returns the job the first try created instead
        of creating a second. ``deadline``: an aware datetime or seconds from now.
        """
        call = submit_call(operations, idempotency_key, callback_url, deadline, metadata)
        return self._submit(call)

    def submit_lines(
        self,
        lines: Iterable[bytes],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        deadline: datetime | float | str | None = None,
    ) -> Job:
        """``submit`` for operations already serialized, one JSON document per item
        (the lines of an NDJSON file, say): sent as they are."""
        return self._submit(lines_call(lines, idempotency_key, callback_url, deadline))

    def dry_run(
        self,
        operations: Iterable[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        deadline: datetime | float | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Check ``operations`` as ``submit`` would, recording nothing: ``{"valid",
        "total", "partitions", "replay_of"}``, or the problem a submit would raise."""
        call = submit_call(operations, idempotency_key, callback_url, deadline, metadata)
        return self._dry_run(call)

    def dry_run_lines(self, lines: Iterable[bytes]) -> dict[str, Any]:
        """``dry_run`` for operations already serialized (``submit_lines``)."""
        return self._dry_run(lines_call(lines, None, None, None))

    def _dry_run(self, call: Call) -> dict[str, Any]:
        assert call.body is not None
        try:
            verdict: dict[str, Any] = self._send(dry_run_call(call)).json()
            return verdict
        finally:
            call.body.close()

    def _submit(self, call: Call) -> Job:
        assert call.body is not None
        try:
            return Job(self, (self._send(call)).json())
        finally:
            call.body.close()

    def job(self, job_id: str) -> Job:
        """The job ``job_id`` as it is now."""
        return Job(self, {"id": job_id}).refresh()

    def jobs(self, status: str | None = None, *, page_size: int = JOBS_PAGE) -> Iterator[Job]:
        """The tenant's jobs (only those with ``status``), newest first, read a page of
        ``page_size`` at a time as the iteration goes."""
        cursor: str | None = None
        while True:
            page = self._send(jobs_call(status, cursor, page_size)).json()
            for item in page["items"]:
                yield Job(self, item)
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def history(
        self, rtype: str, rid: str, *, page_size: int = JOBS_PAGE
    ) -> Iterator[dict[str, Any]]:
        """Every version of the resource, newest first (``version``, ``op``, ``source``,
        ``applied_at``, ``effects``), read a page at a time as the iteration goes."""
        cursor: str | None = None
        while True:
            page = self._send(history_call(rtype, rid, cursor, page_size)).json()
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def get(self, rtype: str, rid: str) -> Resource:
        """The resource ``rtype/rid`` (``NotFound`` if absent or deleted)."""
        call = resource_call("GET", rtype, rid)
        return resource_of(rtype, rid, self._send(call))

    def put(
        self,
        rtype: str,
        rid: str,
        data: Mapping[str, Any],
        *,
        if_version: int | None = None,
        wait: float | None = None,
    ) -> Resource:
        """Create or replace the resource. ``if_version``: only if its version is that
        (else ``VersionMismatch``); ``wait``: seconds to wait for bulk operations
        pending on it (else ``ResourceBusy``)."""
        call = resource_call("PUT", rtype, rid, data, if_version=if_version, wait=wait)
        return resource_of(rtype, rid, self._send(call))

    def patch(
        self,
        rtype: str,
        rid: str,
        patch: Mapping[str, Any],
        *,
        if_version: int | None = None,
        wait: float | None = None,
    ) -> Resource:
        """Apply a JSON Merge Patch to the resource (``NotFound`` if absent)."""
        call = resource_call("PATCH", rtype, rid, patch, if_version=if_version, wait=wait)
        return resource_of(rtype, rid, self._send(call))

    def delete(
        self, rtype: str, rid: str, *, if_version: int | None = None, wait: float | None = None
    ) -> Resource:
        """Delete the resource; the version the delete produced (``data`` is None)."""
        call = resource_call("DELETE", rtype, rid, None, if_version=if_version, wait=wait)
        return resource_of(rtype, rid, self._send(call))
