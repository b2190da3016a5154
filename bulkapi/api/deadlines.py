"""Deadlines for reading from a client socket, kept by one watchdog thread per process.

A timeout set on a socket does not reach a ``recv()`` that is already blocked in it, so
a client that sends part of a request and then nothing would hold the thread reading it
for ever. Shutting down the socket's read side does reach it: the blocked ``recv()``
returns end-of-stream at once, in whatever thread it runs, and the write side stays
open for the answer. An alarm does that at its deadline unless it is cancelled first.

One thread serves every alarm of the process (a timer thread per request would cost a
thread start on every request); it starts with the first alarm, in the process that
arms it, and a forked child (a gunicorn worker) starts its own.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time

#: Cancelled alarms are dropped from the queue at the latest when this many are waiting.
_COMPACT_AFTER = 1024


class Alarm:
    """Shuts down a socket's read side at ``deadline`` unless cancelled first."""

    __slots__ = ("_cancelled", "_fired", "_sock", "deadline")

    def __init__(self, deadline: float, sock: socket.socket) -> None:
        self.deadline = deadline
        self._sock: socket.socket | None = sock
        self._fired = False
        self._cancelled = False

    def cancel(self) -> bool:
        """Disarm; True when the alarm had not gone off (and now never will)."""
        with _watchdog.lock:
            if not self._fired and not self._cancelled:
                self._cancelled = True
                self._sock = None
                _watchdog.cancelled += 1
        return not self._fired

    def _fire(self) -> None:
        """Called by the watchdog with its lock held."""
        sock, self._sock, self._fired = self._sock, None, True
        if sock is None:
            return
        # Closed already or never connected: nothing left to cut off. The plain socket's
        # shutdown: a TLS socket's own drops its TLS state, and the answer still has to
        # be written through it.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RD)


class _Watchdog:
    def __init__(self) -> None:
        self._order = itertools.count()
        self.forget()

    def forget(self) -> None:
        """A fresh, idle watchdog: in a forked child the parent's thread does not exist."""
        self.lock = threading.Condition()
        self.queue: list[tuple[float, int, Alarm]] = []
        self.cancelled = 0
        self._running = False

    def arm(self, sock: socket.socket, seconds: float) -> Alarm:
        alarm = Alarm(time.monotonic() + seconds, sock)
        with self.lock:
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="bulkapi-deadlines", daemon=True).start()
            heapq.heappush(self.queue, (alarm.deadline, next(self._order), alarm))
            if self.queue[0][2] is alarm:
                self.lock.notify()
            if self.cancelled > max(_COMPACT_AFTER, len(self.queue) // 2):
                self.queue = [entry for entry in self.queue if not entry[2]._cancelled]
                heapq.heapify(self.queue)
                self.cancelled = 0
        return alarm

    def _run(self) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                while self.queue and (self.queue[0][2]._cancelled or self.queue[0][0] <= now):
                    alarm = heapq.heappop(self.queue)[2]
                    if alarm._cancelled:
                        self.cancelled -= 1
                    else:
                        alarm._fire()
                self.lock.wait(self.queue[0][0] - now if self.queue else None)


_watchdog = _Watchdog()
os.register_at_fork(after_in_child=_watchdog.forget)


def cut_off_reads(sock: socket.socket, seconds: float) -> Alarm:
    """An alarm that ends every read on ``sock`` (they see end-of-stream) in ``seconds``."""
    return _watchdog.arm(sock, seconds)
