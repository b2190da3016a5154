"""What the client raises: one class per problem ``code`` the service answers with.

Every problem class carries the answer's ``status``, ``code``, ``detail``, ``errors``
(field errors, keyed by operation index for a bulk request), ``retry_after`` (seconds,
from the ``Retry-After`` header) and the raw ``problem`` body. A code this client does
not know becomes the class of its status (``Conflict`` for a 409, ``ClientError`` or
``ServerError`` when the status has no class either), so new codes never break callers.
The tree is drawn in the package docstring (``bulkapi/client/__init__.py``).
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, ClassVar

import httpx

#: Characters of a non-problem answer's body quoted in ``detail``.
_QUOTED_BODY = 200


class BulkapiError(Exception):
    """Anything this client raises (the root of the tree)."""


class ConnectionFailed(BulkapiError):
    """The service could not be reached, or the connection broke, after every retry."""


class WaitTimeout(BulkapiError, TimeoutError):
    """``Job.wait`` ran out of time before the job finished; the job goes on."""


class ProblemError(BulkapiError):
    """The service answered with an RFC 9457 problem (or an error status without one)."""

    #: The problem ``code`` this class stands for (None: a class for a whole status).
    code_name: ClassVar[str | None] = None
    #: The HTTP status this class stands for, when it stands for one.
    status_code: ClassVar[int | None] = None

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: dict[str, Any] | None = None,
        retry_after: float | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.retry_after = retry_after
        self.problem: dict[str, Any] = problem or {}


class ClientError(ProblemError):
    """A 4xx answer: the request must change before it can succeed (429 aside)."""


class ServerError(ProblemError):
    """A 5xx answer: the service could not do it now."""


class BadRequest(ClientError):
    """400 ``bad_request``."""

    code_name = "bad_request"
    status_code = 400


class MalformedBody(BadRequest):
    """400 ``malformed_body``."""

    code_name = "malformed_body"
    status_code = 400


class Unauthorized(ClientError):
    """401 ``unauthorized``."""

    code_name = "unauthorized"
    status_code = 401


class Forbidden(ClientError):
    """403 ``forbidden``."""

    code_name = "forbidden"
    status_code = 403


class NotFound(ClientError):
    """404 ``not_found``."""

    code_name = "not_found"
    status_code = 404


class MethodNotAllowed(ClientError):
    """405 ``method_not_allowed``."""

    code_name = "method_not_allowed"
    status_code = 405


class NotAcceptable(ClientError):
    """406 ``not_acceptable``."""

    code_name = "not_acceptable"
    status_code = 406


class RequestTimeout(ClientError):
    """408 ``request_timeout``."""

    code_name = "request_timeout"
    status_code = 408


class Conflict(ClientError):
    """Any other 409 answer."""

    code_name: ClassVar[str | None] = None
    status_code = 409


class ResourceBusy(Conflict):
    """409 ``resource_busy``."""

    code_name = "resource_busy"
    status_code = 409


class IdempotencyKeyInUse(Conflict):
    """409 ``idempotency_key_in_use``."""

    code_name = "idempotency_key_in_use"
    status_code = 409


class JobFinished(Conflict):
    """409 ``job_finished``."""

    code_name = "job_finished"
    status_code = 409


class JobNotFinished(Conflict):
    """409 ``job_not_finished``."""

    code_name = "job_not_finished"
    status_code = 409


class LengthRequired(ClientError):
    """411 ``length_required``."""

    code_name = "length_required"
    status_code = 411


class PreconditionFailed(ClientError):
    """Any other 412 answer."""

    code_name: ClassVar[str | None] = None
    status_code = 412


class VersionMismatch(PreconditionFailed):
    """412 ``version_mismatch``."""

    code_name = "version_mismatch"
    status_code = 412


class AlreadyExists(PreconditionFailed):
    """412 ``already_exists``."""

    code_name = "already_exists"
    status_code = 412


class PayloadTooLarge(ClientError):
    """413 ``payload_too_large``."""

    code_name = "payload_too_large"
    status_code = 413


class TooManyOperations(PayloadTooLarge):
    """413 ``too_many_operations``."""

    code_name = "too_many_operations"
    status_code = 413


class UriTooLong(ClientError):
    """414 ``uri_too_long``."""

    code_name = "uri_too_long"
    status_code = 414


class UnsupportedMediaType(ClientError):
    """415 ``unsupported_media_type``."""

    code_name = "unsupported_media_type"
    status_code = 415


class ExpectationFailed(ClientError):
    """417 ``expectation_failed``."""

    code_name = "expectation_failed"
    status_code = 417


class ValidationError(ClientError):
    """422 ``validation_error``."""

    code_name = "validation_error"
    status_code = 422


class DuplicateResource(ValidationError):
    """422 ``duplicate_resource``."""

    code_name = "duplicate_resource"
    status_code = 422


class UnknownType(ValidationError):
    """422 ``unknown_type``."""

    code_name = "unknown_type"
    status_code = 422


class CallbackUrlForbidden(ValidationError):
    """422 ``callback_url_forbidden``."""

    code_name = "callback_url_forbidden"
    status_code = 422


class IdempotencyKeyReused(ValidationError):
    """422 ``idempotency_key_reused``."""

    code_name = "idempotency_key_reused"
    status_code = 422


class RuleRejected(ValidationError):
    """422 ``rule_rejected``."""

    code_name = "rule_rejected"
    status_code = 422


class NothingToRetry(ValidationError):
    """422 ``nothing_to_retry``: no operation of the job matches the retry."""

    code_name = "nothing_to_retry"
    status_code = 422


class TooManyRequests(ClientError):
    """Any other 429 answer."""

    code_name: ClassVar[str | None] = None
    status_code = 429


class RateLimited(TooManyRequests):
    """429 ``rate_limited``."""

    code_name = "rate_limited"
    status_code = 429


class TooManyPendingOperations(TooManyRequests):
    """429 ``too_many_pending_operations``."""

    code_name = "too_many_pending_operations"
    status_code = 429


class TooManyStreams(TooManyRequests):
    """429 ``too_many_streams``: read the paginated results, or retry later."""

    code_name = "too_many_streams"
    status_code = 429


class RequestHeaderFieldsTooLarge(ClientError):
    """431 ``request_header_fields_too_large``."""

    code_name = "request_header_fields_too_large"
    status_code = 431


class InternalError(ServerError):
    """500 ``internal_error``."""

    code_name = "internal_error"
    status_code = 500


class Unimplemented(ServerError):
    """501 ``not_implemented``."""

    code_name = "not_implemented"
    status_code = 501


class ServiceUnavailable(ServerError):
    """503 ``service_unavailable``."""

    code_name = "service_unavailable"
    status_code = 503


class ApplyFailed(ServiceUnavailable):
    """503 ``apply_failed``."""

    code_name = "apply_failed"
    status_code = 503


class NotReady(ServiceUnavailable):
    """503 ``not_ready``."""

    code_name = "not_ready"
    status_code = 503


def _subclasses(root: type[ProblemError]) -> list[type[ProblemError]]:
    found = []
    for sub in root.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


#: The class of each known problem code.
BY_CODE: dict[str, type[ProblemError]] = {
    cls.code_name: cls for cls in _subclasses(ProblemError) if cls.code_name
}
#: The class of each status, for codes this client does not know: the status's own
#: class when it has no code (``Conflict``), else the one whose code is the status's
#: generic code (``NotFound`` for 404).
BY_STATUS: dict[int, type[ProblemError]] = {}
for _found in _subclasses(ProblemError):
    if _found.status_code is not None and (
        _found.code_name is None or _found.status_code not in BY_STATUS
    ):
        BY_STATUS[_found.status_code] = _found


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the ``Retry-After`` header asks for (a number or an HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _problem_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def problem_error(response: httpx.Response) -> ProblemError:
    """The exception for an error answer (a read response: its body is available)."""
    status = response.status_code
    body = _problem_body(response)
    code = body.get("code")
    if not isinstance(code, str):
        code = "http_error"
    fallback = ServerError if status >= 500 else ClientError
    cls = BY_CODE.get(code) or BY_STATUS.get(status) or fallback
    detail = body.get("detail")
    if not isinstance(detail, str):
        detail = response.text[:_QUOTED_BODY] or response.reason_phrase
    errors = body.get("errors")
    return cls(
        status,
        code,
        detail,
        errors=errors if isinstance(errors, dict) else None,
        retry_after=retry_after(response),
        problem=body,
    )
