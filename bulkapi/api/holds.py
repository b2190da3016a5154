"""Requests that wait (long polls, event streams, ``Prefer: wait``) may hold only some
of a process's server threads.

Each waiting request keeps a gunicorn thread busy while it sleeps between database
reads. Without a cap, as many waiting clients as there are threads (one tenant, or one
leaked status token) would leave none for anything else, health checks included. Over
the cap a request does not wait: a long poll answers with the current state, an event
stream sends what is new and closes (the client reconnects after the ``retry`` delay), a
sync write answers ``resource_busy`` at once. All of those are answers the contract
already allows, so clients degrade to polling instead of failing.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import current_app


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
    gives it back (callable from anywhere, even after the request), or None."""
    slots: WaitSlots = current_app.extensions["bulkapi.waits"]
    if not slots.acquire(tenant_id):
        return None
    return lambda: slots.release(tenant_id)


@contextmanager
def may_wait(tenant_id: str, wanted: bool = True) -> Iterator[bool]:
    """Whether the request may wait (``wanted`` and a slot was free), for a ``with`` block."""
    release = try_wait(tenant_id) if wanted else None
    try:
        yield release is not None
    finally:
        if release is not None:
            release()
