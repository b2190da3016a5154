"""How views describe themselves in the OpenAPI document: one place, one shape.

Every error is an RFC 9457 problem served as `application/problem+json`. Any request can
be refused before it reaches a view (gunicorn answers a malformed request, one whose
line or headers are too long, or that arrives too slowly); endpoints that take a key can
always answer 401, 429 (rate) and 503 (database away), and any request with arguments
can answer 422. Code generators and schemathesis read these lists, so a status missing
here is a status a client cannot handle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask_smorest import Blueprint

from bulkapi.api.problems import PROBLEM_TYPE
from bulkapi.api.schemas import ProblemSchema

View = TypeVar("View", bound=Callable[..., Any])

_DESCRIPTIONS = {
    400: "Malformed request or body (`bad_request`, `malformed_body`)",
    401: "Missing or invalid credentials (`unauthorized`)",
    404: "Not found, or another tenant's (`not_found`)",
    408: "The request's headers or body did not arrive in time (`request_timeout`)",
    409: "Conflict: `resource_busy`, `job_finished`, `job_not_finished` or "
    "`idempotency_key_in_use`",
    412: "Precondition failed (`version_mismatch`, `already_exists`)",
    413: "Too large (`payload_too_large`, `too_many_operations`)",
    414: "Request line too long (`uri_too_long`)",
    415: "Unsupported media type (`unsupported_media_type`)",
    422: "Invalid request (`validation_error` and the codes refining it)",
    429: "Rate limited (`rate_limited`) or too much pending work (`too_many_pending_operations`)",
    431: "Request headers too large (`request_header_fields_too_large`)",
    503: "A dependency is unreachable, or a write kept failing; retry after `Retry-After`",
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}
#: Headers an error answer carries (documented, so clients know to read them).
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "Always `Bearer`: send `Authorization: Bearer <key>`.",
            "schema": {"type": "string"},
        }
    },
    409: _RETRY_AFTER,
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}

#: What any request may be answered before a view sees it.
TRANSPORT = (400, 408, 414, 431)
#: What every authenticated endpoint may answer besides its own errors.
AUTHENTICATED = (401, 422, 429, 503)


def problems(blp: Blueprint, *codes: int, authenticated: bool = True) -> Callable[[View], View]:
    """Document ``codes``, the transport set and (unless ``authenticated`` is false) the
    authenticated set as problem responses of a view."""
    documented = set(codes) | set(TRANSPORT) | (set(AUTHENTICATED) if authenticated else set())

    def decorate(view: View) -> View:
        # Each ``alt_response`` wraps the view in a function that runs on every request;
        # only their documentation is wanted, so it is moved onto the view itself.
        wrapped: Callable[..., Any] = view
        for code in sorted(documented):
            wrapped = blp.alt_response(
                code,
                schema=ProblemSchema,
                content_type=PROBLEM_TYPE,
                description=_DESCRIPTIONS[code],
                headers=_HEADERS.get(code),
            )(wrapped)
        view._apidoc = wrapped._apidoc  # type: ignore[attr-defined]
        return view

    return decorate


def links(
    blp: Blueprint, status: int, *operation_ids: str, **parameters: str
) -> Callable[[View], View]:
    """OpenAPI links from the ``status`` answer to the operations ``operation_ids``, each
    called with ``parameters`` (runtime expressions such as ``$response.body#/id``)."""
    found = {
        operation_id: {"operationId": operation_id, "parameters": parameters}
        for operation_id in operation_ids
    }
    decorate: Callable[[View], View] = blp.doc(responses={status: {"links": found}})
    return decorate


#: Links from a job representation to what can be done with that job.
JOB_FOLLOW_UPS = ("getJob", "listJobResults", "streamJobEvents", "cancelJob")
#: The job's id in an answer whose body is a job.
JOB_ID = "$response.body#/id"

#: Headers of a single resource's answers.
ETAG = {
    "ETag": {
        "description": 'The version as a strong entity tag (`"3"`): send it back in `If-Match`.',
        "schema": {"type": "string"},
    }
}
#: Headers of an answer that created something.
LOCATION = {
    "Location": {"description": "Where the new job or resource is.", "schema": {"type": "string"}}
}
#: The header that makes a request that creates a job safe to retry.
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "Same key and request within 24 h: the original job, nothing new.",
}
#: Headers of a 202 that answers with a new (or replayed) job.
SUBMITTED = {
    **LOCATION,
    "Retry-After": {
        "description": "Seconds before the first poll is worth it.",
        "schema": {"type": "integer"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when an `Idempotency-Key` answered with the original job.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
