"""The one exception tree; the API turns each into an RFC 9457 problem.

BulkapiError
├── ValidationFailed            validation_error (errors by field or op index)
│   ├── DuplicateResources      duplicate_resource
│   ├── UnknownType             unknown_type (BULKAPI_STRICT_TYPES and an unregistered type)
│   └── CallbackUrlForbidden    callback_url_forbidden (a loopback, private, ... target)
├── MalformedBody               malformed_body (not parseable as the declared type)
├── TooManyOperations           too_many_operations
├── PayloadTooLarge             payload_too_large
├── UnsupportedContentEncoding  unsupported_media_type (a Content-Encoding other than gzip)
├── Unauthorized                unauthorized
├── NotFound                    not_found
├── PreconditionFailed          version_mismatch / already_exists
├── ResourceBusy                resource_busy (carries the oldest job holding the key)
├── RuleRejectedWrite           rule_rejected (an operator's rule refused a sync write)
├── ApplyFailed                 apply_failed (an operator's rule kept crashing)
├── IdempotencyKeyReused        idempotency_key_reused (same key, different request)
├── IdempotencyKeyInUse         idempotency_key_in_use (same key, request in flight)
├── RateLimited                 rate_limited / too_many_pending_operations (with Retry-After)
├── JobFinished                 job_finished
├── JobNotFinished              job_not_finished (retry of a job still queued or processing)
└── NothingToRetry              nothing_to_retry (no failed or cancelled operation matches)
"""

from __future__ import annotations

from typing import Any


class BulkapiError(Exception):
    code = "error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ValidationFailed(BulkapiError):
    code = "validation_error"

    def __init__(self, detail: str, errors: dict[str, Any], **extra: Any) -> None:
        super().__init__(detail, errors=errors, **extra)
        self.errors = errors


class DuplicateResources(ValidationFailed):
    code = "duplicate_resource"


class UnknownType(ValidationFailed):
    code = "unknown_type"


class CallbackUrlForbidden(ValidationFailed):
    code = "callback_url_forbidden"


class MalformedBody(BulkapiError):
    code = "malformed_body"


class TooManyOperations(BulkapiError):
    code = "too_many_operations"


class PayloadTooLarge(BulkapiError):
    code = "payload_too_large"


class UnsupportedContentEncoding(BulkapiError):
    code = "unsupported_media_type"


class Unauthorized(BulkapiError):
    code = "unauthorized"


class NotFound(BulkapiError):
    code = "not_found"


class PreconditionFailed(BulkapiError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class ResourceBusy(BulkapiError):
    code = "resource_busy"

    def __init__(self, detail: str, job_id: str) -> None:
        super().__init__(detail, job_id=job_id)
        self.job_id = job_id


class RuleRejectedWrite(BulkapiError):
    code = "rule_rejected"


class ApplyFailed(BulkapiError):
    code = "apply_failed"


class IdempotencyKeyReused(BulkapiError):
    code = "idempotency_key_reused"


class IdempotencyKeyInUse(BulkapiError):
    code = "idempotency_key_in_use"


class RateLimited(BulkapiError):
    def __init__(self, detail: str, retry_after: int, code: str = "rate_limited") -> None:
        super().__init__(detail, retry_after=retry_after)
        self.code = code


class JobFinished(BulkapiError):
    code = "job_finished"


class JobNotFinished(BulkapiError):
    code = "job_not_finished"


class NothingToRetry(BulkapiError):
    code = "nothing_to_retry"
