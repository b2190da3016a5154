"""Sending drain wake-ups off the request path, coalesced across requests.

The database already holds the work when a wake-up is sent, so the send need not delay
the 202: a background thread sends one message per partition that asked since the last
send. If the process dies before sending, the sweeper wakes those partitions instead.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bulkapi.dispatch.lanes import Lane

logger = logging.getLogger(__name__)


class Waker:
    """Sends wake-ups per lane (``senders``: lane to send function).

    A partition asked for on the prompt lane is not sent on the regular lane as well.
    """

    def __init__(self, senders: Mapping[Lane, Callable[[list[int]], Any]]) -> None:
        self._senders = dict(senders)
        self._wanted: dict[Lane, set[int]] = {lane: set() for lane in senders}
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False

    def wake(self, partitions: Iterable[int], *, lane: Lane = Lane.REGULAR) -> None:
        """Ask for a wake-up of each partition on ``lane``."""
        with self._condition:
            self._wanted[lane].update(partitions)
            self._ensure_thread()
            self._condition.notify()

    def _ensure_thread(self) -> None:
        # A forked child (gunicorn, dramatiq) inherits no threads: start its own.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="bulkapi-waker", daemon=True)
            self._thread.start()

    def _anything_wanted(self) -> bool:
        return any(self._wanted.values())

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._anything_wanted() and not self._stopping:
                    self._condition.wait()
                if self._stopping and not self._anything_wanted():
                    return
                wanted = self._wanted
                self._wanted = {lane: set() for lane in self._senders}
            if Lane.PROMPT in wanted and Lane.REGULAR in wanted:
                wanted[Lane.REGULAR] -= wanted[Lane.PROMPT]
            for lane, partitions in wanted.items():
                self._send_all(partitions, self._senders[lane])

    @staticmethod
    def _send_all(partitions: set[int], send: Callable[[list[int]], Any]) -> None:
        if not partitions:
            return
        try:
            send(sorted(partitions))
        except Exception:
            logger.exception(
                "could not send wake-ups for partitions %s; the sweeper will", sorted(partitions)
            )

    def flush_and_stop(self, timeout: float = 10.0) -> None:
        """Send what is still wanted, then stop the thread (used at shutdown)."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
            thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
