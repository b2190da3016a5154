"""Entry module for Dramatiq worker processes: ``dramatiq bulkapi.worker`` (or ``bulkapi worker``).

Importing it sets the broker and declares the actors from the environment, once per
worker process.
"""

from __future__ import annotations

from bulkapi.config import Settings
from bulkapi.runtime import Runtime

settings = Settings.from_env()
if settings.broker_url is None:
    raise SystemExit(
        "BULKAPI_BROKER_URL is not set: worker processes need a broker "
        "(in embedded mode `bulkapi serve` runs the workers itself)."
    )
runtime = Runtime(settings)
broker = runtime.broker
