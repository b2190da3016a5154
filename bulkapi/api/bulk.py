"""Bulk submission: validate everything, record it in one transaction, answer 202."""

from __future__ import annotations

import os
from typing import Any

import orjson
from flask import Response, request
from flask_smorest import Blueprint

from bulkapi.api.auth import require_tenant
from bulkapi.api.bodies import Hash, read_bulk
from bulkapi.api.callbacks import callback_lookups
from bulkapi.api.collector import collector_paused
from bulkapi.api.context import runtime
from bulkapi.api.documented import JOB_FOLLOW_UPS, JOB_ID, LOCATION, links, problems
from bulkapi.api.limits import check_pending_cap
from bulkapi.api.representations import job_body
from bulkapi.api.responses import json_response
from bulkapi.api.schemas import (
    BulkQueryArgs,
    BulkRequestSchema,
    OperationSchema,
    SubmittedJobSchema,
)
from bulkapi.core.errors import ValidationFailed
from bulkapi.core.jobs import Counts, JobStatus
from bulkapi.core.keys import partition_of
from bulkapi.core.validation import (
    check_callback_url,
    check_metadata,
    parse_deadline,
    parse_operations,
)
from bulkapi.store.admission import Idempotency, NewJob, admit
from bulkapi.store.database import reading, utcnow
from bulkapi.store.jobs import JobRecord, get_job

#: Exit status of the injected crash (BULKAPI_FAULT_CRASH_AFTER_COMMIT), as after SIGKILL.
CRASH_EXIT_CODE = 137

blp = Blueprint(
    "bulk",
    __name__,
    url_prefix="/v1/bulk",
    description="Submit many writes at once; they run in the background, in order.",
)


#: Longest Idempotency-Key accepted (the column's size).
MAX_IDEMPOTENCY_KEY = 255


@blp.route("", methods=["POST"])
@blp.arguments(BulkQueryArgs, location="query", as_kwargs=True)
@blp.doc(
    operationId="submitBulk",
    parameters=[
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "maxLength": 255},
            "description": "Same key and body within 24 h: the original job, nothing new.",
        }
    ],
    requestBody={
        "required": True,
        "description": "A JSON envelope, or NDJSON: one `Operation` per line (then "
        "`callback_url` and `deadline` go in the query).",
        "content": {
            "application/json": {"schema": BulkRequestSchema},
            "application/x-ndjson": {"schema": OperationSchema},
        },
    },
)
@blp.response(
    202,
    SubmittedJobSchema,
    description="Accepted (or replayed): the job, to follow at `Location`.",
    headers={
        **LOCATION,
        "Retry-After": {
            "description": "Seconds before the first poll is worth it.",
            "schema": {"type": "integer"},
        },
        "Idempotent-Replayed": {
            "description": "`true` when an `Idempotency-Key` answered with the original job.",
            "schema": {"type": "string", "enum": ["true"]},
        },
    },
)
@links(blp, 202, *JOB_FOLLOW_UPS, job_id=JOB_ID)
@problems(blp, 400, 408, 409, 413, 415)
def submit(callback_url: str | None, deadline: str | None) -> Response:
    """Submit a bulk request: all operations are accepted together, or none is.

    With `Idempotency-Key`, the same key and body within 24 hours answer with the
    original job (header `Idempotent-Replayed: true`) and record nothing new.
    """
    tenant_id = require_tenant()
    rt = runtime()
    settings = rt.settings
    body = read_bulk(settings, digest="Idempotency-Key" in request.headers)
    envelope = body.envelope
    now = utcnow()
    check_callback_url(envelope.callback_url, allow_private=settings.allow_private_callbacks)
    check_metadata(envelope.metadata, settings.admission_limits, orjson.dumps)
    job_deadline = parse_deadline(envelope.deadline, now)
    idempotency = _idempotency(body.digest)
    with collector_paused(len(body.items)):
        operations = parse_operations(body.items, settings.admission_limits, orjson.dumps)
        del body  # the raw items: only their documents live on, in the operations
        rt.registry.check_operations(operations)
    # Last of the checks: the only one that may wait (on DNS), so invalid requests never do.
    callback_lookups().check(envelope.callback_url, allow_private=settings.allow_private_callbacks)
    partitions = [partition_of(tenant_id, op.key, settings.partitions) for op in operations]
    job = NewJob(
        tenant_id,
        operations,
        partitions,
        envelope.callback_url,
        envelope.metadata,
        job_deadline,
        idempotency,
    )
    with rt.engine.begin() as conn:
        check_pending_cap(conn, tenant_id, len(operations), settings.max_pending_operations)
        admitted = admit(conn, job, now)
    if settings.fault_crash_after_commit:
        os._exit(CRASH_EXIT_CODE)
    headers = {"Location": f"/v1/jobs/{admitted.job_id}", "Retry-After": str(settings.retry_after)}
    if admitted.replayed:
        with reading(rt.engine) as conn:
            record = get_job(conn, tenant_id, admitted.job_id)
        headers["Idempotent-Replayed"] = "true"
    else:
        small = len(operations) <= settings.prompt_job_operations
        rt.waker.wake(admitted.partitions, lane="prompt" if small else "regular")
        record = JobRecord(
            admitted.job_id,
            JobStatus.QUEUED,
            admitted.created_at,
            None,
            None,
            Counts(len(operations)),
            [(JobStatus.QUEUED, admitted.created_at)],
            envelope.callback_url,
            envelope.metadata,
            job_deadline,
        )
    representation: dict[str, Any] = job_body(record)
    representation["status_token"] = admitted.status_token
    return json_response(representation, 202, headers)


def _idempotency(digest: Hash | None) -> Idempotency | None:
    """The Idempotency-Key and the request's fingerprint: the body as decoded (so the
    same operations compressed or not are the same request), its media type, its query."""
    key = request.headers.get("Idempotency-Key")
    if key is None or digest is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise ValidationFailed(
            "The Idempotency-Key is invalid.",
            {
                "Idempotency-Key": [
                    f"Must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters."
                ]
            },
        )
    digest.update(b"\0" + request.mimetype.encode() + b"\0" + request.query_string)
    return Idempotency(key, digest.hexdigest())
