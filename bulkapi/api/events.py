"""A job's progress as Server-Sent Events: ``GET /v1/jobs/{id}/events``.

The stream polls the database as the long poll does (the database is the record; there
is no pub/sub to subscribe to) and turns each change it sees into events:

- ``status``, one per transition, in ``status_history`` order, none skipped when several
  happened between two polls. A status the job has already left is sent as the job was
  at that status: ``status`` and ``status_history`` stop there (``finished_at`` is null
  unless it is terminal); the counts are those read now.
- ``progress`` when the number of finished operations (``total - pending``) changes, and
  after each status the job is still in, so a client has the counts of every status.

Every event's ``data`` is the job representation of ``GET /v1/jobs/{id}``.

**Event ids** are integers that increase along a job's events, so a client (or a browser's
``EventSource``) resuming with ``Last-Event-ID`` gets every later event once and nothing
it had. An id encodes a ``Position``: the status's rank (queued < processing < terminal),
the finished count and the kind (a status before the progress at the same count).
A ``Last-Event-ID`` that is not one this job could have sent (not a number, or past its
current state) is ignored: the stream starts over as for a first connection, which may
repeat an event but never misses one. Resuming a terminal job with nothing newer answers
204, which tells an ``EventSource`` to stop reconnecting.

**A first connection** gets the current state at once: the current status then a
``progress`` event, or, for a terminal job, the final ``progress`` then the terminal
``status``. The stream ends after the terminal ``status`` event, or after
``STREAM_SECONDS``; the client reconnects with ``Last-Event-ID`` after the ``retry``
delay the stream sets. A stream holds a server thread, so it needs one of the process's
wait slots (``api/holds.py``); without one it sends what is new and closes at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from flask import Response, request, stream_with_context
from flask_smorest import Blueprint
from sqlalchemy.exc import DBAPIError

from bulkapi.api.auth import require_job_reader
from bulkapi.api.documented import problems
from bulkapi.api.holds import try_wait
from bulkapi.api.jobs import read_job
from bulkapi.api.representations import job_body
from bulkapi.api.schemas import JobEventSchema
from bulkapi.core.errors import NotFound
from bulkapi.core.jobs import STATUS_RANK, JobStatus
from bulkapi.polling import Poll
from bulkapi.store.jobs import JobRecord

logger = logging.getLogger(__name__)

blp = Blueprint(
    "events",
    __name__,
    url_prefix="/v1/jobs",
    description="Follow a job as Server-Sent Events: its status changes and progress.",
)

#: Seconds without an event after which a comment line keeps the connection (and any
#: proxy in between) from timing out.
HEARTBEAT_SECONDS = 15.0
#: Longest one stream stays open; the client then reconnects with ``Last-Event-ID``
#: (and a revoked key is noticed then).
STREAM_SECONDS = 60.0
#: Milliseconds a client waits before reconnecting (the SSE ``retry`` field).
RETRY_MILLISECONDS = 2000
#: Polls of the job start this often and slow down to at most one a second, so a stream
#: of a long job costs the database about one job read a second.
_FIRST_POLL_SECONDS = 0.05
_LAST_POLL_SECONDS = 1.0
#: Longest ``Last-Event-ID`` parsed (ids are far shorter); longer ones are ignored.
_MAX_ID_DIGITS = 24

_STATUS = 0
_PROGRESS = 1

_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "Resume after this event: only later events are sent. Unknown ids are "
    "ignored (the stream starts over).",
}


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """How far a client has followed a job; ordered as the events are sent."""

    #: ``STATUS_RANK`` of the status the event belongs to.
    rank: int
    #: Operations no longer pending when the event was sent.
    finished: int
    #: ``_STATUS`` or ``_PROGRESS``: a status event comes before the progress at its count.
    kind: int

    def event_id(self, total: int) -> int:
        """One integer per position of a job with ``total`` operations, in the same order."""
        return self.rank * _span(total) + 2 * self.finished + self.kind


def _span(total: int) -> int:
    """Ids one status rank covers: two kinds for every finished count from 0 to total."""
    return 2 * (total + 1)


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    position: Position
    data: dict[str, Any]

    def encode(self, total: int) -> bytes:
        event_id = self.position.event_id(total)
        return b"event: %s\nid: %d\ndata: %s\n\n" % (
            self.name.encode(),
            event_id,
            orjson.dumps(self.data),
        )


def _finished(job: JobRecord) -> int:
    return job.counts.total - job.counts.pending


def _reached(job: JobRecord) -> list[JobStatus]:
    """The job's statuses up to its current one (history read after the job row may hold
    a newer transition; the next poll sends it)."""
    current = STATUS_RANK[job.status]
    return [status for status, _ in job.history if STATUS_RANK[status] <= current]


def _open_rank(reached: Sequence[JobStatus]) -> int:
    """Rank of the last non-terminal status the job was in (queued, or processing)."""
    return max((STATUS_RANK[status] for status in reached if not status.is_terminal), default=0)


def _as_of(job: JobRecord, status: JobStatus) -> dict[str, Any]:
    """The job's representation as it was at ``status`` (the counts are today's)."""
    rank = STATUS_RANK[status]
    return job_body(
        replace(
            job,
            status=status,
            history=[entry for entry in job.history if STATUS_RANK[entry[0]] <= rank],
            started_at=None if status is JobStatus.QUEUED else job.started_at,
            finished_at=job.finished_at if status.is_terminal else None,
        )
    )


def first_position(job: JobRecord) -> Position:
    """What a client connecting for the first time counts as seen: everything before the
    current status (for a terminal job, everything before its final progress)."""
    reached = _reached(job)
    if job.status.is_terminal:
        return Position(_open_rank(reached), -1, _PROGRESS)
    return Position(STATUS_RANK[job.status] - 1, 0, _PROGRESS)


def parse_last_event_id(value: str | None, job: JobRecord) -> Position | None:
    """The position a ``Last-Event-ID`` names, or None unless this job could have sent it."""
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > _MAX_ID_DIGITS:
        return None
    rank, rest = divmod(int(value), _span(job.counts.total))
    position = Position(rank, rest // 2, rest % 2)
    if position.rank > STATUS_RANK[job.status] or position.finished > _finished(job):
        return None
    return position


def events_after(job: JobRecord, seen: Position) -> list[Event]:
    """The events that bring a client which has seen up to ``seen`` to ``job``, in order."""
    reached = _reached(job)
    finished = _finished(job)
    events = [
        Event("status", Position(STATUS_RANK[status], finished, _STATUS), _as_of(job, status))
        for status in reached
        if not status.is_terminal and STATUS_RANK[status] > seen.rank
    ]
    progress = Position(_open_rank(reached), finished, _PROGRESS)
    if progress > seen:
        events.append(Event("progress", progress, _as_of(job, job.status)))
    rank = STATUS_RANK[job.status]
    if job.status.is_terminal and rank > seen.rank:
        events.append(Event("status", Position(rank, finished, _STATUS), _as_of(job, job.status)))
    return events


def _stream(
    tenant_id: str, job: JobRecord, seen: Position, stream_seconds: float
) -> Iterator[bytes]:
    """Events until the job is terminal or ``stream_seconds`` have passed.

    Once the headers are sent an error can no longer be a problem response: if the
    database goes away the stream just ends, and the client resumes where it was.
    """
    total = job.counts.total
    yield b"retry: %d\n\n" % RETRY_MILLISECONDS
    poll = Poll(stream_seconds, _LAST_POLL_SECONDS, first=_FIRST_POLL_SECONDS)
    last_sent = time.monotonic()
    while True:
        events = events_after(job, seen)
        if events:
            yield b"".join(event.encode(total) for event in events)
            seen = events[-1].position
            last_sent = time.monotonic()
        if job.status.is_terminal or poll.remaining() <= 0:
            return
        now = time.monotonic()
        if now - last_sent >= HEARTBEAT_SECONDS:
            yield b": keep-alive\n\n"
            last_sent = now
        # Wake in time for the next heartbeat. Once the time is up this does not sleep:
        # the look after it still sends what it finds, then the check above ends the stream.
        poll.sleep(cap=last_sent + HEARTBEAT_SECONDS - now)
        try:
            job = read_job(tenant_id, job.id)
        except NotFound:
            return
        except DBAPIError as error:
            logger.warning("job events of %s ended: %s", job.id, error)
            return


@blp.route("/<job_id>/events", methods=["GET"])
@blp.response(
    200,
    JobEventSchema,
    content_type="text/event-stream",
    description="Server-Sent Events `status` and `progress` (each as this schema says), "
    "closed after the terminal status event.",
)
@blp.alt_response(204, description="Resumed after the terminal event: nothing more to send.")
@blp.doc(operationId="streamJobEvents", parameters=[_LAST_EVENT_ID])
@problems(blp, 404)
def events(job_id: str) -> Response:
    """A job's status changes and progress as Server-Sent Events, resumable by `Last-Event-ID`."""
    tenant_id = require_job_reader(job_id)
    job = read_job(tenant_id, job_id)  # 404 before the stream starts
    seen = parse_last_event_id(request.headers.get("Last-Event-ID"), job)
    if seen is None:
        seen = first_position(job)
    elif job.status.is_terminal and not events_after(job, seen):
        return Response(status=204)
    # Without a wait slot the stream sends what is new and closes; the client comes back
    # after the retry delay, as it would after any closed stream.
    release = None if job.status.is_terminal else try_wait(tenant_id)
    lifetime = 0.0 if release is None else STREAM_SECONDS
    response = Response(
        stream_with_context(_stream(tenant_id, job, seen, lifetime)),
        mimetype="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )
    if release is not None:
        response.call_on_close(release)
    return response
