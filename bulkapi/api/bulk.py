"""Bulk submission: validate everything, record it in one transaction, answer 202 (SPEC §4)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import orjson
from flask import Response
from flask_smorest import Blueprint

from bulkapi.api.auth import require_tenant
from bulkapi.api.bodies import read_bulk
from bulkapi.api.context import runtime
from bulkapi.api.representations import job_body
from bulkapi.api.responses import json_response
from bulkapi.api.schemas import (
    BulkQueryArgs,
    BulkRequestSchema,
    OperationSchema,
    ProblemSchema,
    SubmittedJobSchema,
)
from bulkapi.core.errors import ValidationFailed
from bulkapi.core.jobs import Counts, JobStatus
from bulkapi.core.keys import partition_of
from bulkapi.core.validation import parse_operations
from bulkapi.store.admission import NewJob, admit
from bulkapi.store.database import utcnow
from bulkapi.store.jobs import JobRecord

#: Exit status of the injected crash (BULKAPI_FAULT_CRASH_AFTER_COMMIT), as after SIGKILL.
CRASH_EXIT_CODE = 137

blp = Blueprint(
    "bulk",
    __name__,
    url_prefix="/v1/bulk",
    description="Submit many writes at once; they run in the background, in order.",
)


def _size_of(document: object) -> int:
    return len(orjson.dumps(document))


def _check_callback_url(url: str | None) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(
            "The callback URL is invalid.",
            {"callback_url": ["Must be an absolute http or https URL."]},
        )


@blp.route("", methods=["POST"])
@blp.arguments(BulkQueryArgs, location="query", as_kwargs=True)
@blp.doc(
    requestBody={
        "required": True,
        "content": {
            "application/json": {"schema": BulkRequestSchema},
            "application/x-ndjson": {
                "schema": OperationSchema,
                "description": "One operation per line.",
            },
        },
    }
)
@blp.response(202, SubmittedJobSchema, description="Accepted; poll the job at Location.")
@blp.alt_response(400, schema=ProblemSchema, description="Malformed body")
@blp.alt_response(401, schema=ProblemSchema, description="Unauthorized")
@blp.alt_response(413, schema=ProblemSchema, description="Too many operations or too large")
@blp.alt_response(415, schema=ProblemSchema, description="Unsupported media type")
@blp.alt_response(422, schema=ProblemSchema, description="Invalid or duplicate operations")
def submit(callback_url: str | None) -> Response:
    """Submit a bulk request: all operations are accepted together, or none is."""
    tenant_id = require_tenant()
    rt = runtime()
    settings = rt.settings
    items, envelope = read_bulk(settings.max_body_bytes, settings.max_operations)
    callback = envelope["callback_url"] or callback_url
    _check_callback_url(callback)
    operations = parse_operations(items, settings.admission_limits, _size_of)
    partitions = [partition_of(tenant_id, op.key, settings.partitions) for op in operations]
    now = utcnow()
    job = NewJob(tenant_id, operations, partitions, callback, envelope["metadata"])
    with rt.engine.begin() as conn:
        admitted = admit(conn, job, now)
    if settings.fault_crash_after_commit:
        os._exit(CRASH_EXIT_CODE)
    rt.waker.wake(admitted.partitions)
    record = JobRecord(
        admitted.job_id,
        JobStatus.QUEUED,
        now,
        None,
        None,
        Counts(len(operations)),
        [(JobStatus.QUEUED, now)],
        callback,
        envelope["metadata"],
    )
    body: dict[str, Any] = job_body(record)
    body["status_token"] = admitted.status_token
    return json_response(
        body,
        202,
        {
            "Location": f"/v1/jobs/{admitted.job_id}",
            "Retry-After": str(settings.retry_after),
        },
    )
