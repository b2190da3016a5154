"""Requests that wait or stream (long polls, event streams, NDJSON result streams,
``Prefer: wait``) may hold only some of a process's server threads.

Each keeps a gunicorn thread busy while it sleeps between database reads, or while its
reader takes the answer (a reader that stops is cut off after ``BULKAPI_SEND_TIMEOUT``).
Without a cap, as many waiting clients as there are threads (one tenant, or one leaked
status token) would leave none for anything else, health checks included. Over the cap
a request does not wait: a long poll answers with the current state, an event stream
sends what is new and closes (the client reconnects after the ``retry`` delay), a sync
write answers ``resource_busy`` at once, an NDJSON result stream answers 429
``too_many_streams`` (its paginated JSON form needs no slot). Clients degrade to polling
instead of failing. A sync write says
which it got: ``Preference-Applied: wait=N`` when its ``Prefer: wait`` was honoured
(RFC 7240), and no such header, plus a sentence in the problem's ``detail``, when it was
declined.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import Response, after_this_request, current_app

from bulkapi.core.errors import ResourceBusy

#: Appended to a ``resource_busy`` detail when the write's ``Prefer: wait`` was declined.
WAIT_DECLINED = (
    " Prefer: wait was declined: the requests this API process lets wait (for this"
    " tenant, or in all) are all waiting already, so this one did not; retry after"
    " Retry-After."
)


class WaitSlots:
    """Counts the requests allowed to wait: at most ``limit`` in the process and at most
    ``per_tenant`` of them for one tenant, so one tenant cannot take every slot."""

    def __init__(self, limit: int, per_tenant: int) -> None:
        self.limit = limit
        self.per_tenant = per_tenant
        self._held: Counter[str] = Counter()
        self._total = 0
        self._lock = threading.Lock()

    def acquire(self, tenant_id: str) -> bool:
        """Take a slot for a request of ``tenant_id``; False when it must not wait."""
        with self._lock:
            if self._total >= self.limit or self._held[tenant_id] >= self.per_tenant:
                return False
            self._total += 1
            self._held[tenant_id] += 1
            return True

    def release(self, tenant_id: str) -> None:
        with self._lock:
            self._total -= 1
            self._held[tenant_id] -= 1
            if not self._held[tenant_id]:
                del self._held[tenant_id]


def wait_slots(limit: int) -> WaitSlots:
    """The slots of one API process: a tenant may hold half of them (at least one)."""
    return WaitSlots(limit, max(1, limit // 2))


def try_wait(tenant_id: str) -> Callable[[], None] | None:
    """Take one of this process's slots for the request to wait in: the function that
    gives it back (callable from anywhere, even after the request, and more than once:
    only the first call counts), or None."""
    slots: WaitSlots = current_app.extensions["bulkapi.waits"]
    if not slots.acquire(tenant_id):
        return None
    once = threading.Lock()

    def release() -> None:
        if once.acquire(blocking=False):
            slots.release(tenant_id)

    return release


@contextmanager
def may_wait(tenant_id: str, wanted: bool = True) -> Iterator[bool]:
    """Whether the request may wait (``wanted`` and a slot was free), for a ``with`` block."""
    release = try_wait(tenant_id) if wanted else None
    try:
        yield release is not None
    finally:
        if release is not None:
            release()


@contextmanager
def wait_preference(wait_seconds: float, waiting: bool) -> Iterator[None]:
    """Say whether a ``Prefer: wait=N`` (``wait_seconds`` > 0) was honoured: with a
    ``Preference-Applied`` header on whatever the request answers when it could wait, and
    in a ``resource_busy`` problem's ``detail`` when it could not."""
    if wait_seconds <= 0:
        yield
        return
    if waiting:

        @after_this_request
        def applied(response: Response) -> Response:
            response.headers["Preference-Applied"] = f"wait={wait_seconds:g}"
            return response

        yield
        return
    try:
        yield
    except ResourceBusy as busy:
        busy.detail += WAIT_DECLINED
        raise
