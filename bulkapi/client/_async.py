"""``AsyncClient`` and its ``AsyncJob``: the asyncio client, the twin of ``_sync.py``
(each method does what its namesake there does; the decisions are in ``_wire.py``
and ``_follow.py``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
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


class AsyncJob(JobState):
    """A bulk job: its last known state (``data``, ``status``, ``counts`` ...) and what
    can be done with it."""

    def __init__(self, client: AsyncClient, data: dict[str, Any]) -> None:
        super().__init__(data)
        self._client = client

    async def refresh(self) -> AsyncJob:
        """Read the job's current state."""
        self.data = (await self._client._send(job_call(self.id))).json()
        return self

    async def wait(
        self, timeout: float | None = None, on_progress: Callable[[AsyncJob], object] | None = None
    ) -> AsyncJob:
        """Follow the job until it is terminal and return it; ``on_progress(job)`` is
        called on every status change and progress the service reports.

        Follows the job's event stream, resuming after the last event seen when the
        connection drops; long polls when the service has no stream. ``WaitTimeout``
        after ``timeout`` seconds (the job goes on).
        """
        follow = Follow(self, timeout, time.monotonic)
        while not self.done:
            if not follow.streaming:
                self.data = (await self._client._send(follow.poll_call())).json()
                if on_progress is not None:
                    on_progress(self)
                continue
            try:
                await self._follow_stream(follow, on_progress)
            except httpx.TransportError:
                if not self.done:
                    await asyncio.sleep(follow.pause(self._client.retry, broken=True))
                continue
            if follow.streaming and not self.done:
                await asyncio.sleep(follow.pause(self._client.retry, broken=False))
        return self

    async def _follow_stream(
        self, follow: Follow, on_progress: Callable[[AsyncJob], object] | None
    ) -> None:
        try:
            response = await self._client._send(follow.events_call(), stream=True)
        except ProblemError as error:
            follow.give_up_on_stream(error)
            return
        try:
            if response.status_code == 204:  # resumed after the terminal event
                await self.refresh()
            elif follow.opened(response):
                async for line in response.aiter_lines():
                    if follow.update(line) and on_progress is not None:
                        on_progress(self)
                    if self.done:
                        return
                    follow.left()
        finally:
            await response.aclose()

    async def results(self, status: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every operation's result in request order, read lazily from one NDJSON
        stream; only those with ``status`` (succeeded, failed, cancelled, pending)."""
        response = await self._client._send(results_call(self.id, status), stream=True)
        try:
            async for line in response.aiter_lines():
                for item in ndjson_items([line]):
                    yield item
        except httpx.TransportError as error:
            raise ConnectionFailed(f"results of job {self.id}: {error!r}") from error
        finally:
            await response.aclose()

    async def cancel(self) -> AsyncJob:
        """Cancel the operations not yet applied (``JobFinished`` if it is terminal)."""
        self.data = (await self._client._send(job_call(self.id, "cancel"))).json()
        return self

    async def retry(
        self, codes: Sequence[str] | None = None, *, idempotency_key: str | None = None
    ) -> AsyncJob:
        """A new job of this finished job's failed and cancelled operations (see
        ``Job.retry``)."""
        call = retry_call(self.id, codes, idempotency_key)
        return AsyncJob(self._client, (await self._client._send(call)).json())


class AsyncClient:
    """An asyncio client of one bulkapi service, authenticated with one API key (or a
    job's status token, which reads that job only). Use it as a context manager, or
    ``aclose()`` it."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {api_key}",
                "User-Agent": f"bulkapi-client/{__version__}",
            },
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        """Send ``call``, again after a 429, 503 or broken connection as ``retry`` allows;
        the successful answer, or the error."""
        attempt, waited = 1, 0.0
        while True:
            content = None if call.body is None else _aiter(call.body.chunks())
            request = self._http.build_request(
                content=content, **request_options(call, self._timeout)
            )
            failure: ProblemError | httpx.TransportError
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as error:
                failure = error
            else:
                if response.status_code < 400:
                    return response
                await response.aread()
                await response.aclose()
                failure = problem_error(response)
            delay = next_delay(call, self.retry, attempt, waited, failure)
            await asyncio.sleep(delay)
            attempt, waited = attempt + 1, waited + delay

    async def submit(
        self,
        operations: Iterable[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        deadline: datetime | float | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AsyncJob:
        """Submit ``operations`` (a list, or any iterable: read once, streamed) as one
        bulk job; the accepted job.

        Every submit carries an Idempotency-Key (a new one unless given), so trying it
        again after a broken connection returns the job the first try created instead
        of creating a second. ``deadline``: an aware datetime or seconds from now.
        """
        call = submit_call(operations, idempotency_key, callback_url, deadline, metadata)
        return await self._submit(call)

    async def submit_lines(
        self,
        lines: Iterable[bytes],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        deadline: datetime | float | str | None = None,
    ) -> AsyncJob:
        """``submit`` for operations already serialized, one JSON document per item
        (the lines of an NDJSON file, say): sent as they are."""
        return await self._submit(lines_call(lines, idempotency_key, callback_url, deadline))

    async def dry_run(
        self,
        operations: Iterable[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        deadline: datetime | float | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Check ``operations`` as ``submit`` would, recording nothing (see
        ``Client.dry_run``)."""
        call = submit_call(operations, idempotency_key, callback_url, deadline, metadata)
        assert call.body is not None
        try:
            verdict: dict[str, Any] = (await self._send(dry_run_call(call))).json()
            return verdict
        finally:
            call.body.close()

    async def _submit(self, call: Call) -> AsyncJob:
        assert call.body is not None
        try:
            return AsyncJob(self, (await self._send(call)).json())
        finally:
            call.body.close()

    async def job(self, job_id: str) -> AsyncJob:
        """The job ``job_id`` as it is now."""
        return await AsyncJob(self, {"id": job_id}).refresh()

    async def jobs(
        self, status: str | None = None, *, page_size: int = JOBS_PAGE
    ) -> AsyncIterator[AsyncJob]:
        """The tenant's jobs (only those with ``status``), newest first, read a page of
        ``page_size`` at a time as the iteration goes."""
        cursor: str | None = None
        while True:
            page = (await self._send(jobs_call(status, cursor, page_size))).json()
            for item in page["items"]:
                yield AsyncJob(self, item)
            cursor = page["next_cursor"]
            if cursor is None:
                return

    async def history(
        self, rtype: str, rid: str, *, page_size: int = JOBS_PAGE
    ) -> AsyncIterator[dict[str, Any]]:
        """Every version of the resource, newest first (``version``, ``op``, ``source``,
        ``applied_at``, ``effects``), read a page at a time as the iteration goes."""
        cursor: str | None = None
        while True:
            page = (await self._send(history_call(rtype, rid, cursor, page_size))).json()
            for item in page["items"]:
                yield item
            cursor = page["next_cursor"]
            if cursor is None:
                return

    async def get(self, rtype: str, rid: str) -> Resource:
        """The resource ``rtype/rid`` (``NotFound`` if absent or deleted)."""
        call = resource_call("GET", rtype, rid)
        return resource_of(rtype, rid, await self._send(call))

    async def put(
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
        return resource_of(rtype, rid, await self._send(call))

    async def patch(
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
        return resource_of(rtype, rid, await self._send(call))

    async def delete(
        self, rtype: str, rid: str, *, if_version: int | None = None, wait: float | None = None
    ) -> Resource:
        """Delete the resource; the version the delete produced (``data`` is None)."""
        call = resource_call("DELETE", rtype, rid, None, if_version=if_version, wait=wait)
        return resource_of(rtype, rid, await self._send(call))


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A body's chunks as httpx's asyncio transport reads them."""
    for chunk in chunks:
        yield chunk
