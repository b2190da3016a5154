"""`bulkapi worker` keeps Dramatiq's worker group running.

Dramatiq's main process stops its whole group and exits when one worker process dies
unexpectedly (SIGKILL, the OOM killer, a crash in a C extension): it leaves restarting
to a supervisor. Run bare, a host would then stop draining until someone noticed. So
`bulkapi worker` runs the group as its child, passes SIGTERM, SIGINT and SIGHUP on, and
starts the group again whenever it exits without having been told to stop, after a
delay that doubles while it keeps failing. Nothing is lost in between: the database
holds the work, and the new group's sweepers wake every partition that has some.

The group also ends with its main process. Dramatiq's worker processes are children of
its main process; killed, that process would leave them running (re-parented to init,
draining beside the next group, and never told to stop). So the group runs in a process
group of its own; every worker process is killed when the main process dies (see
``bulkapi/worker.py``); this process is a child subreaper, so the orphans become its
children; and whenever the main process has exited, what is left of its group gets
``ORPHAN_GRACE`` seconds to go, is then killed, and is reaped, before any new group
starts and before `bulkapi worker` exits. The main process itself is killed if `bulkapi
worker` dies without stopping it: that happens only when `bulkapi worker` is killed, and
the group then ends as abruptly, as a crashed host's would.

This is not a process manager: a system supervisor (systemd, Kubernetes) still runs
`bulkapi worker` itself, and gets its exit code when it is stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType

from bulkapi.lifelines import become_subreaper, die_with_parent

logger = logging.getLogger(__name__)

#: Seconds before the first restart; doubles on every restart in a row, up to the cap.
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
#: A group that ran this long before it failed was healthy: the delay starts over.
HEALTHY_SECONDS = 60.0
#: Seconds the processes a group's main process left behind get to go (they are killed
#: with it; this catches any that were not yet tied to it) before they are killed.
ORPHAN_GRACE = 10.0
#: Seconds to wait for killed processes to be gone (they are reaped as they go).
_KILL_WAIT = 5.0
#: How often a group that is ending is looked at.
_POLL_SECONDS = 0.05
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
        become_subreaper()
        supervisor = os.getpid()
        delay = FIRST_RESTART_DELAY
        while True:
            started = time.monotonic()
            self._child = subprocess.Popen(
                self.argv,
                process_group=0,  # the group's own: its leftovers can be found and killed
                # This process runs no other thread, and _tie_to takes no lock.
                preexec_fn=lambda: _tie_to(supervisor),  # noqa: PLW1509
            )
            if self._stop.is_set():  # told to stop while the group was being started
                self._child.send_signal(signal.SIGTERM)
            code = self._child.wait()
            _end_group(self._child.pid)
            if self._stop.is_set() or code == 0:
                return code
            if time.monotonic() - started >= HEALTHY_SECONDS:
                delay = FIRST_RESTART_DELAY
            logger.error("the worker group exited with %s; restarting it in %.0f s", code, delay)
            if self._stop.wait(delay):
                return code
            delay = min(delay * 2, MAX_RESTART_DELAY)


def _tie_to(supervisor: int) -> None:
    """Between fork and exec of a group's main process: SIGKILL to it when the supervisor
    dies (only ever killed itself: a stopping supervisor stops its group first), and no
    group at all if it is dead already."""
    if not die_with_parent(signal.SIGKILL, supervisor):
        os._exit(1)


def _group_left(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is left; reaps those that are this process's
    children (orphans re-parented here) and have exited."""
    try:
        while os.waitpid(-pgid, os.WNOHANG)[0]:
            pass
    except ChildProcessError:  # none of them is a child of this process
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_group(pgid: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for group ``pgid`` to be gone; whether it is."""
    deadline = time.monotonic() + seconds
    while _group_left(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def _end_group(pgid: int) -> None:
    """Make sure nothing of the group whose main process has exited keeps running."""
    if _wait_group(pgid, ORPHAN_GRACE):
        return
    logger.warning("processes of the stopped worker group outlived it; killing them")
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not _wait_group(pgid, _KILL_WAIT):
        logger.error("processes of worker group %d did not go away after SIGKILL", pgid)
