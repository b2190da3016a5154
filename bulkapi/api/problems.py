"""The one place that builds error bodies (RFC 9457 problem details)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import psycopg
from flask import Flask, Response
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from bulkapi.core import errors

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"

#: Status and title for each domain error; the code comes from the exception.
_DOMAIN: dict[type[errors.BulkapiError], tuple[int, str]] = {
    errors.DuplicateResources: (422, "Duplicate resource"),
    errors.UnknownType: (422, "Unknown resource type"),
    errors.CallbackUrlForbidden: (422, "Callback URL forbidden"),
    errors.ValidationFailed: (422, "Validation failed"),
    errors.MalformedBody: (400, "Malformed body"),
    errors.TooManyOperations: (413, "Too many operations"),
    errors.PayloadTooLarge: (413, "Payload too large"),
    errors.UnsupportedContentEncoding: (415, "Unsupported content encoding"),
    errors.Unauthorized: (401, "Unauthorized"),
    errors.NotFound: (404, "Not found"),
    errors.PreconditionFailed: (412, "Precondition failed"),
    errors.ResourceBusy: (409, "Resource busy"),
    errors.JobFinished: (409, "Job finished"),
    errors.JobNotFinished: (409, "Job not finished"),
    errors.NothingToRetry: (422, "Nothing to retry"),
    errors.RateLimited: (429, "Too many requests"),
    errors.IdempotencyKeyReused: (422, "Idempotency key reused"),
    errors.IdempotencyKeyInUse: (409, "Idempotency key in use"),
    errors.RuleRejectedWrite: (422, "Rejected by a business rule"),
    errors.ApplyFailed: (503, "Write could not be applied"),
}

#: Errors that go away by themselves: their answers say when to try again.
_RETRYABLE = (
    errors.ResourceBusy,
    errors.RateLimited,
    errors.IdempotencyKeyInUse,
    errors.ApplyFailed,
)

#: Codes for HTTP errors raised by Flask, Werkzeug, flask-smorest or gunicorn themselves.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    422: "validation_error",
    429: "rate_limited",
    431: "request_header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def http_code(status: int) -> str:
    """The machine code of an HTTP error that has no domain error behind it."""
    return _HTTP_CODES.get(status, "http_error")


def problem_body(status: int, code: str, title: str, detail: str, **extra: Any) -> bytes:
    """The serialized problem: for ``problem`` and for gunicorn's own error answers."""
    return orjson.dumps(
        {
            "type": f"urn:bulkapi:problem:{code}",
            "title": title,
            "status": status,
            "detail": detail,
            "code": code,
            **extra,
        }
    )


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = problem_body(status, code, title, detail, **extra)
    response = Response(body, status=status, mimetype=PROBLEM_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _domain_problem(error: errors.BulkapiError) -> Response:
    status, title = next(
        (found for kind, found in _DOMAIN.items() if isinstance(error, kind)), (400, "Bad request")
    )
    headers = {}
    if isinstance(error, errors.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, errors.UnsupportedContentEncoding):
        headers["Accept-Encoding"] = "gzip"  # the codings taken (RFC 9110 15.5.16)
    if isinstance(error, _RETRYABLE):
        headers["Retry-After"] = str(error.extra.get("retry_after", 1))
    extra = {name: value for name, value in error.extra.items() if name != "retry_after"}
    return problem(status, error.code, title, error.detail, headers, **extra)


def _http_problem(error: HTTPException) -> Response:
    status = error.code or 500
    code = http_code(status)
    extra: dict[str, Any] = {}
    data = getattr(error, "data", None)  # flask-smorest puts argument errors here
    if isinstance(data, dict) and "messages" in data:
        messages = data["messages"]
        extra["errors"] = (
            next(iter(messages.values()))
            if isinstance(messages, dict) and len(messages) == 1
            else messages
        )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    valid_methods = getattr(error, "valid_methods", None)
    if valid_methods:
        headers["Allow"] = ", ".join(valid_methods)
    return problem(status, code, error.name, error.description or error.name, headers, **extra)


#: Answers to a 503 whose dependency (database, broker) is down: when to look again.
DEPENDENCY_RETRY = {"Retry-After": "5"}


#: SQLSTATEs of a statement stopped by ``lock_timeout`` or ``statement_timeout``.
_TIMED_OUT = {"55P03", "57014"}


def _database_unavailable(error: DBAPIError | psycopg.Error) -> Response:
    """The database went away mid-request, or a lock or statement ran past its session
    limit: a retryable 503, not a bug (500). Raw driver errors come from statements the
    store runs on the driver's own cursor (COPY, pipelines)."""
    driver_error = error.orig if isinstance(error, DBAPIError) else error
    if getattr(driver_error, "sqlstate", None) in _TIMED_OUT:
        logger.warning("database timeout: %s", driver_error)
        return problem(
            503,
            "service_unavailable",
            "Service unavailable",
            "The database did not finish this request in time (a lock or statement "
            "timeout); retry shortly.",
            DEPENDENCY_RETRY,
        )
    if isinstance(error, psycopg.Error):
        if not isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
            return _unexpected(error)
    elif (
        not isinstance(error, OperationalError | InterfaceError)
        and not error.connection_invalidated
    ):
        return _unexpected(error)
    logger.warning("database unavailable: %s", error)
    return problem(
        503,
        "service_unavailable",
        "Service unavailable",
        "The database is unreachable right now; retry shortly.",
        DEPENDENCY_RETRY,
    )


def _unexpected(error: Exception) -> Response:
    logger.exception("unhandled error", exc_info=error)
    return problem(
        500,
        "internal_error",
        "Internal server error",
        "The server failed to handle this request; it has been logged.",
    )


def register(app: Flask) -> None:
    app.register_error_handler(errors.BulkapiError, _domain_problem)
    app.register_error_handler(HTTPException, _http_problem)
    app.register_error_handler(DBAPIError, _database_unavailable)
    app.register_error_handler(psycopg.Error, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)
