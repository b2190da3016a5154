"""`bulkapi worker` keeps Dramatiq's worker group running.

Dramatiq's main process stops its whole group and exits when one worker process dies
unexpectedly (SIGKILL, the OOM killer, a crash in a C extension): it leaves restarting
to a supervisor. Run bare, a host would then stop draining until someone noticed. So
`bulkapi worker` runs the group as its child, passes SIGTERM, SIGINT and SIGHUP on, and
starts the group again whenever it exits without having been told to stop, after a
delay that doubles while it keeps failing. Nothing is lost in between: the database
holds the work, and the new group's sweepers wake every partition that has some.

This is not a process manager: a system supervisor (systemd, Kubernetes) still runs
`bulkapi worker` itself, and gets its exit code when it is stopped.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType

logger = logging.getLogger(__name__)

#: Seconds before the first restart; doubles on every restart in a row, up to the cap.
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
#: A group that ran this long before it failed was healthy: the delay starts over.
HEALTHY_SECONDS = 60.0
#: Signals passed on to the group; the first two also mean "stop, do not restart".
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_STOPPING = (signal.SIGTERM, signal.SIGINT)


class Supervisor:
    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self._stop = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum in _STOPPING:
            self._stop.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def run(self) -> int:
        """Run the group until told to stop; the exit code of its last run."""
        for signum in _FORWARDED:
            signal.signal(signum, self._on_signal)
        delay = FIRST_RESTART_DELAY
        while True:
            started = time.monotonic()
            self._child = subprocess.Popen(self.argv)
            if self._stop.is_set():  # told to stop while the group was being started
                self._child.send_signal(signal.SIGTERM)
            code = self._child.wait()
            if self._stop.is_set() or code == 0:
                return code
            if time.monotonic() - started >= HEALTHY_SECONDS:
                delay = FIRST_RESTART_DELAY
            logger.error("the worker group exited with %s; restarting it in %.0f s", code, delay)
            if self._stop.wait(delay):
                return code
            delay = min(delay * 2, MAX_RESTART_DELAY)
