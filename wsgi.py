"""WSGI entry point for fleets: ``gunicorn wsgi:app`` (configure with BULKAPI_* variables).

Without a broker it also runs the embedded workers in each gunicorn process.
"""

import atexit

from bulkapi.api.app import create_app
from bulkapi.config import Settings
from bulkapi.runtime import Runtime

runtime = Runtime(Settings.from_env())
if runtime.settings.embedded:
    runtime.start_embedded_worker()
atexit.register(runtime.stop)
app = create_app(runtime)
