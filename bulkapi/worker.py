"""Entry module for Dramatiq worker processes: ``dramatiq bulkapi.worker`` (or ``bulkapi worker``).

Importing it sets the broker and declares the actors from the environment, once per
worker process. It also ties the worker process to Dramatiq's main process, which
started it: when that one dies (killed, say), the worker is sent SIGTERM, finishes its
current message and exits, instead of draining on beside whatever group replaces it.
"""

from __future__ import annotations

import multiprocessing
import signal

from bulkapi.config import Settings
from bulkapi.lifelines import die_with_parent
from bulkapi.runtime import Runtime

main_process = multiprocessing.parent_process()
if main_process is not None and not die_with_parent(signal.SIGTERM, main_process.pid or 0):
    raise SystemExit("Dramatiq's main process is gone: this worker process stops.")
settings = Settings.from_env()
if settings.broker_url is None:
    raise SystemExit(
        "BULKAPI_BROKER_URL is not set: worker processes need a broker "
        "(in embedded mode `bulkapi serve` runs the workers itself)."
    )
runtime = Runtime(settings)
broker = runtime.broker
