"""Ties between processes, so none of a worker group outlives the process it belongs to.

Linux's ``prctl`` does what POSIX cannot: a process may ask to be sent a signal when its
parent dies (``PR_SET_PDEATHSIG``), and a supervisor may ask that its descendants whose
parent died become its children (``PR_SET_CHILD_SUBREAPER``) instead of init's, so it
can signal and reap them. Elsewhere both are no-ops, and only the supervisor's process
group kill remains.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

#: ``prctl`` options, from ``<linux/prctl.h>``.
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


#: The C library, loaded once at import: ``die_with_parent`` may run between a fork and
#: an exec, where loading a library (or logging) could deadlock on another thread's lock.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _prctl(option: int, value: int) -> bool:
    """``prctl(option, value)``; False where there is no such call, or it failed."""
    return _LIBC is not None and _LIBC.prctl(option, value, 0, 0, 0) == 0


def die_with_parent(signum: signal.Signals, parent: int) -> bool:
    """Be sent ``signum`` when the parent process ``parent`` dies. False if it is gone
    already (it may die between the fork and this call): the caller should exit then.
    Safe between fork and exec."""
    _prctl(_PR_SET_PDEATHSIG, signum)
    return os.getppid() == parent


def become_subreaper() -> None:
    """Descendants orphaned from now on become this process's children, not init's."""
    if _LIBC is not None and not _prctl(_PR_SET_CHILD_SUBREAPER, 1):
        logger.warning("could not become a child subreaper: %s", os.strerror(ctypes.get_errno()))
