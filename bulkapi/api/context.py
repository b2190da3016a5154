"""Access to the process runtime from request handlers."""

from __future__ import annotations

from flask import current_app

from bulkapi.runtime import Runtime


def runtime() -> Runtime:
    found: Runtime = current_app.extensions["bulkapi"]
    return found
