"""The Python client of a bulkapi service: bulk jobs, their progress and results, and
single-resource reads and writes. It needs only httpx (no server-side package loads).

    from bulkapi.client import Client

    with Client("http://127.0.0.1:8000", api_key) as client:
        job = client.submit({"op": "upsert", "type": "doc", "id": str(n), "data": {"n": n}}
                            for n in range(10_000))
        job.wait(on_progress=lambda job: print(f"{job.progress:.0%}"))
        for failed in job.results(status="failed"):
            print(failed["index"], failed["error"])

``AsyncClient`` does the same with ``await`` (``async for`` over ``jobs()`` and
``results()``). docs/client.md has the whole tour.

Exceptions (``bulkapi.client.errors``; every name is also importable from here). A
problem whose ``code`` this client does not know is raised as the class of its status:

    BulkapiError                              anything this client raises
    ├── ConnectionFailed                      unreachable, or the connection broke (after retries)
    ├── WaitTimeout                           Job.wait(timeout=...) ran out (also a TimeoutError)
    └── ProblemError                          an error answer (.status .code .detail .errors ...)
        ├── ClientError                       4xx, any other code
        │   ├── BadRequest                    400 bad_request
        │   │   └── MalformedBody             400 malformed_body
        │   ├── Unauthorized                  401 unauthorized
        │   ├── Forbidden                     403 forbidden
        │   ├── NotFound                      404 not_found
        │   ├── MethodNotAllowed              405 method_not_allowed
        │   ├── NotAcceptable                 406 not_acceptable
        │   ├── RequestTimeout                408 request_timeout
        │   ├── Conflict                      409, any other code
        │   │   ├── ResourceBusy              409 resource_busy
        │   │   ├── IdempotencyKeyInUse       409 idempotency_key_in_use
        │   │   ├── JobFinished               409 job_finished
        │   │   └── JobNotFinished            409 job_not_finished
        │   ├── LengthRequired                411 length_required
        │   ├── PreconditionFailed            412, any other code
        │   │   ├── VersionMismatch           412 version_mismatch
        │   │   └── AlreadyExists             412 already_exists
        │   ├── PayloadTooLarge               413 payload_too_large
        │   │   └── TooManyOperations         413 too_many_operations
        │   ├── UriTooLong                    414 uri_too_long
        │   ├── UnsupportedMediaType          415 unsupported_media_type
        │   ├── ExpectationFailed             417 expectation_failed
        │   ├── ValidationError               422 validation_error
        │   │   ├── DuplicateResource         422 duplicate_resource
        │   │   ├── UnknownType               422 unknown_type
        │   │   ├── CallbackUrlForbidden      422 callback_url_forbidden
        │   │   ├── IdempotencyKeyReused      422 idempotency_key_reused
        │   │   ├── RuleRejected              422 rule_rejected
        │   │   └── NothingToRetry            422 nothing_to_retry
        │   ├── TooManyRequests               429, any other code
        │   │   ├── RateLimited               429 rate_limited
        │   │   ├── TooManyPendingOperations  429 too_many_pending_operations
        │   │   └── TooManyStreams            429 too_many_streams
        │   └── RequestHeaderFieldsTooLarge   431 request_header_fields_too_large
        └── ServerError                       5xx, any other code
            ├── InternalError                 500 internal_error
            ├── Unimplemented                 501 not_implemented
            └── ServiceUnavailable            503 service_unavailable
                ├── ApplyFailed               503 apply_failed
                └── NotReady                  503 not_ready
"""

from bulkapi.client._async import AsyncClient, AsyncJob
from bulkapi.client._sync import Client, Job
from bulkapi.client._wire import Resource, RetryPolicy
from bulkapi.client.errors import (
    AlreadyExists,
    ApplyFailed,
    BadRequest,
    BulkapiError,
    CallbackUrlForbidden,
    ClientError,
    Conflict,
    ConnectionFailed,
    DuplicateResource,
    ExpectationFailed,
    Forbidden,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InternalError,
    JobFinished,
    JobNotFinished,
    LengthRequired,
    MalformedBody,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    NothingToRetry,
    NotReady,
    PayloadTooLarge,
    PreconditionFailed,
    ProblemError,
    RateLimited,
    RequestHeaderFieldsTooLarge,
    RequestTimeout,
    ResourceBusy,
    RuleRejected,
    ServerError,
    ServiceUnavailable,
    TooManyOperations,
    TooManyPendingOperations,
    TooManyRequests,
    TooManyStreams,
    Unauthorized,
    Unimplemented,
    UnknownType,
    UnsupportedMediaType,
    UriTooLong,
    ValidationError,
    VersionMismatch,
    WaitTimeout,
)

__all__ = [
    "AlreadyExists",
    "ApplyFailed",
    "AsyncClient",
    "AsyncJob",
    "BadRequest",
    "BulkapiError",
    "CallbackUrlForbidden",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "DuplicateResource",
    "ExpectationFailed",
    "Forbidden",
    "IdempotencyKeyInUse",
    "IdempotencyKeyReused",
    "InternalError",
    "Job",
    "JobFinished",
    "JobNotFinished",
    "LengthRequired",
    "MalformedBody",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "NotReady",
    "NothingToRetry",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ProblemError",
    "RateLimited",
    "RequestHeaderFieldsTooLarge",
    "RequestTimeout",
    "Resource",
    "ResourceBusy",
    "RetryPolicy",
    "RuleRejected",
    "ServerError",
    "ServiceUnavailable",
    "TooManyOperations",
    "TooManyPendingOperations",
    "TooManyRequests",
    "TooManyStreams",
    "Unauthorized",
    "Unimplemented",
    "UnknownType",
    "UnsupportedMediaType",
    "UriTooLong",
    "ValidationError",
    "VersionMismatch",
    "WaitTimeout",
]
