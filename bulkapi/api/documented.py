"""How views declare their error responses in the OpenAPI document: one place, one shape.

Every error is an RFC 9457 problem served as ``application/problem+json``. Endpoints that
take a key can always answer 401, 429 (rate) and 503 (database away), and any request
with arguments can answer 422.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask_smorest import Blueprint

from bulkapi.api.problems import PROBLEM_TYPE
from bulkapi.api.schemas import ProblemSchema

View = TypeVar("View", bound=Callable[..., Any])

_DESCRIPTIONS = {
    400: "Malformed body",
    401: "Missing or invalid credentials",
    404: "Not found (or another tenant's)",
    408: "The body did not arrive in time",
    409: "Conflict: resource busy, job finished or idempotency key in use",
    412: "Precondition failed",
    413: "Too many operations or too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Rate limited or too much pending work",
    503: "A dependency is unreachable; retry later",
}

#: What every authenticated endpoint may answer besides its own errors.
AUTHENTICATED = (401, 422, 429, 503)


def problems(blp: Blueprint, *codes: int) -> Callable[[View], View]:
    """Document ``codes`` (plus the authenticated set) as problem responses of a view."""

    def decorate(view: View) -> View:
        for code in sorted(set(codes) | set(AUTHENTICATED)):
            view = blp.alt_response(
                code,
                schema=ProblemSchema,
                content_type=PROBLEM_TYPE,
                description=_DESCRIPTIONS[code],
            )(view)
        return view

    return decorate
