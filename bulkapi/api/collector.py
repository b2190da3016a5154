"""Python's cycle collector paused while a large bulk body is decoded and validated.

Decoding 100,000 operations makes about a million objects; each time the count of new
objects passes a threshold the collector runs, and its full passes walk every object
alive, all of them new and none of them garbage. That was more than half the admission's
CPU time. The collector is one per process, so the pause is shared: it lasts while any
request holds it, and no request joins a pause that has already lasted ``MAX_PAUSE``
seconds, so under a steady stream of large requests the collector still runs between
them. Reference counting frees everything else meanwhile; only cycles wait.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: Seconds after which a pause takes no new holders (the collector runs once it ends).
MAX_PAUSE = 5.0
#: Operations from which decoding a body is worth a pause (fewer make few objects).
LARGE = 10_000


class _Pause:
    """The process's one pause: its holders, when it began, and the collector's state
    before it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders = 0
        self.since = 0.0
        self.was_enabled = False

    def join(self, operations: int) -> bool:
        with self.lock:
            if operations < LARGE or (self.holders and time.monotonic() - self.since >= MAX_PAUSE):
                return False
            if self.holders == 0:
                self.since, self.was_enabled = time.monotonic(), gc.isenabled()
                gc.disable()
            self.holders += 1
            return True

    def leave(self) -> None:
        with self.lock:
            self.holders -= 1
            if self.holders == 0 and self.was_enabled:
                gc.enable()


_pause = _Pause()


@contextmanager
def collector_paused(operations: int) -> Iterator[None]:
    """Pause the cycle collector for the block when it handles ``operations`` operations
    or more (shared with other threads; see above)."""
    joined = _pause.join(operations)
    try:
        yield
    finally:
        if joined:
            _pause.leave()
