"""Entry module for Dramatiq worker processes: ``dramatiq bulkapi.worker`` (or ``bulkapi worker``).

Importing it sets the broker and declares the actors from the environment, once per
worker process. It also ties the worker process to Dramatiq's main process, which
started it: the main process only dies before its workers when it is killed (a graceful
stop ends the workers first), and then the worker is killed too (SIGKILL), as a crashed
host's would be, instead of draining on beside whatever group replaces it, or hanging
on in a handler that never returns. Its batch rolls back; the database keeps the work.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys

from bulkapi.config import Settings
from bulkapi.lifelines import die_with_parent
from bulkapi.runtime import Runtime, freeze_startup_objects

#: Exit status of a worker process whose main process died while it was starting.
ORPHANED_EXIT_CODE = 1

main_process = multiprocessing.parent_process()
if main_process is not None and not die_with_parent(signal.SIGKILL, main_process.pid or 0):
    # At once, without unwinding: Dramatiq's worker start tells the main process it has
    # booted in a ``finally`` (a multiprocessing Event), and with the main process gone
    # that handshake waits forever, which left the process behind, orphaned, for good.
    sys.stderr.write("Dramatiq's main process is gone: this worker process stops.\n")
    sys.stderr.flush()
    os._exit(ORPHANED_EXIT_CODE)
settings = Settings.from_env()
if settings.broker_url is None:
    raise SystemExit(
        "BULKAPI_BROKER_URL is not set: worker processes need a broker "
        "(in embedded mode `bulkapi serve` runs the workers itself)."
    )
runtime = Runtime(settings)
broker = runtime.broker
freeze_startup_objects()
