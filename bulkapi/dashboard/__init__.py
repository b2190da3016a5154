"""The jobs dashboard: one static page and its assets, served from the package.

The page holds no server-side logic: it reads and cancels jobs through the public API,
with the key (or a job's status token) the user types into it. The page itself needs no
credential, so these routes do not authenticate.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

#: The page's HTML, scripts and styles (listed in pyproject.toml's package-data).
ASSETS = Path(__file__).parent / "static"

#: The page loads only its own scripts and styles, talks only to this origin, submits no
#: form anywhere and cannot be framed: a key typed into it has nowhere else to go.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

blueprint = Blueprint("dashboard", __name__)


@blueprint.after_request
def _policy(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@blueprint.get("/dashboard")
def page() -> Response:
    """The dashboard's page (the credential is typed into it, never sent in a URL)."""
    return send_from_directory(ASSETS, "index.html")


@blueprint.get("/dashboard/assets/<path:filename>")
def asset(filename: str) -> Response:
    return send_from_directory(ASSETS, filename)
