"""The Flask application factory."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import swagger_ui_bundle
from flask import Flask, Response, send_from_directory
from flask_smorest import Api

from bulkapi import __version__
from bulkapi.api import bulk, events, health, jobs, metrics, problems, resources, retries, types
from bulkapi.api.auth import CredentialCache
from bulkapi.api.callbacks import CallbackLookups
from bulkapi.api.holds import wait_slots
from bulkapi.api.limits import TenantRateLimiter
from bulkapi.dashboard import blueprint as dashboard
from bulkapi.runtime import Runtime

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Where /docs loads Swagger UI from: served by us, so the docs work offline.
_SWAGGER_ASSETS = Path(swagger_ui_bundle.swagger_ui_path)

#: On every answer, gunicorn's own error answers included (see bulkapi/server.py).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


#: The same, by lower-case name, as WSGI header pairs.
_SECURITY_PAIRS = {name.lower(): (name, value) for name, value in SECURITY_HEADERS.items()}
#: Statuses that carry no content, hence no content type (Flask sets one anyway).
_NO_CONTENT = ("204", "304")


class _FinishHeaders:
    """Adds the security headers to every answer, on the WSGI header list.

    Werkzeug's ``Headers`` checks every value it is given, which made these four headers
    a measurable share of the work around a sync PUT.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def finish(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            present = {name.lower() for name, _ in headers}
            headers.extend(pair for lower, pair in _SECURITY_PAIRS.items() if lower not in present)
            if status[:3] in _NO_CONTENT:
                headers[:] = [pair for pair in headers if pair[0].lower() != "content-type"]
            return start_response(status, headers, exc_info)

        return self.app(environ, finish)


class _Flask(Flask):
    def make_default_options_response(self) -> Response:
        """OPTIONS: the ``Allow`` header and no content (Flask's own says 200, text/html)."""
        response = super().make_default_options_response()
        response.status_code = 204
        return response


class _Api(Api):  # type: ignore[misc]
    #: No blanket "default" error response: each view documents its problems.
    DEFAULT_ERROR_RESPONSE_NAME = None


#: The document's top level beside the paths: how to authenticate, what this is.
_DOCUMENT = {
    "info": {
        "description": "Bulk writes with per-resource ordering: `POST /v1/bulk` answers 202 "
        "with a job to follow; single resources are written synchronously and never jump "
        "ahead of accepted bulk work. Every error is an RFC 9457 problem whose `code` is "
        "stable. The full contract is `docs/api.md` in the repository."
    },
    "security": [{"bearerAuth": []}],
    "components": {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key, or a job's `status_token` (reads only that job).",
            }
        }
    },
}
#: flask-smorest registers these for its own error and pagination bodies; bulkapi uses
#: neither, and generated clients would grow models for them.
_UNUSED_SCHEMAS = ("Error", "PaginationMetadata")


def create_app(runtime: Runtime) -> Flask:
    app = _Flask("bulkapi")
    app.config.update(
        API_TITLE="bulkapi",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",
        # Swagger UI would send the spec to validator.swagger.io from every browser.
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},
        MAX_CONTENT_LENGTH=runtime.settings.max_body_bytes,
    )
    app.extensions["bulkapi"] = runtime
    app.extensions["bulkapi.rate"] = TenantRateLimiter.for_settings(runtime.settings)
    app.extensions["bulkapi.types"] = types.describe_types(runtime.registry)
    app.extensions["bulkapi.waits"] = wait_slots(runtime.settings.max_waiting_requests)
    app.extensions["bulkapi.credentials"] = CredentialCache(
        runtime.settings.credential_cache_seconds
    )
    app.extensions["bulkapi.callbacks"] = CallbackLookups(runtime.settings.callback_lookup_timeout)
    api = _Api(app, spec_kwargs=_DOCUMENT)
    for name in _UNUSED_SCHEMAS:
        api.spec.components.schemas.pop(name, None)
    for blueprint in (bulk.blp, jobs.blp, events.blp, resources.blp, types.blp, health.blp):
        api.register_blueprint(blueprint)
    api.register_blueprint(retries.blp)
    api.register_blueprint(metrics.blp)
    app.register_blueprint(dashboard)  # a static page: not part of the OpenAPI document
    problems.register(app)  # after Api(): replaces flask-smorest's own error bodies
    app.wsgi_app = _FinishHeaders(app.wsgi_app)  # type: ignore[method-assign]

    @app.get("/docs/assets/<path:filename>")
    def swagger_assets(filename: str) -> Response:
        return send_from_directory(_SWAGGER_ASSETS, filename)

    return app
