"""`bulkapi serve`: gunicorn (gthread) around the app, workers inside when embedded."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from bulkapi.api.app import create_app
from bulkapi.config import Settings
from bulkapi.runtime import Runtime

#: Seconds gunicorn gives in-flight requests (and embedded batches) at SIGTERM.
GRACEFUL_TIMEOUT = 30


def _stop_runtime(server: Any, worker: Any) -> None:
    runtime = getattr(worker.app, "runtime", None)
    if runtime is not None:
        runtime.stop()


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, host: str, port: int) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        self.options = {
            "bind": f"{host}:{port}",
            "workers": settings.serving_processes,
            "worker_class": "gthread",
            "threads": settings.web_threads,
            "timeout": 120,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "worker_exit": _stop_runtime,
            "accesslog": None,
        }
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        """Runs in each worker process after the fork, so engines and threads are its own."""
        self.runtime = Runtime(self.settings)
        if self.settings.embedded:
            self.runtime.start_embedded_worker()
        return create_app(self.runtime)
