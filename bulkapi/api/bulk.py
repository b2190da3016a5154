"""Bulk submission: validate everything, record it in one transaction, answer 202."""

from __future__ import annotations

import orjson
from flask import Response, request
from flask_smorest import Blueprint

from bulkapi.api import admission
from bulkapi.api.admission import fingerprinted_query, idempotency_key
from bulkapi.api.auth import require_tenant
from bulkapi.api.bodies import Hash, read_bulk
from bulkapi.api.callbacks import callback_lookups
from bulkapi.api.collector import collector_paused
from bulkapi.api.context import runtime
from bulkapi.api.documented import (
    IDEMPOTENCY_KEY,
    JOB_FOLLOW_UPS,
    JOB_ID,
    SUBMITTED,
    links,
    problems,
)
from bulkapi.api.schemas import (
    BulkQueryArgs,
    BulkRequestSchema,
    DryRunSchema,
    OperationSchema,
    SubmittedJobSchema,
)
from bulkapi.core.keys import partition_of
from bulkapi.core.validation import (
    check_callback_url,
    check_metadata,
    parse_deadline,
    parse_operations,
)
from bulkapi.store.admission import Idempotency, NewJob
from bulkapi.store.database import utcnow

blp = Blueprint(
    "bulk",
    __name__,
    url_prefix="/v1/bulk",
    description="Submit many writes at once; they run in the background, in order.",
)


@blp.route("", methods=["POST"])
@blp.arguments(BulkQueryArgs, location="query", as_kwargs=True)
@blp.doc(
    operationId="submitBulk",
    parameters=[IDEMPOTENCY_KEY],
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
    headers=SUBMITTED,
)
@blp.alt_response(
    200,
    schema=DryRunSchema,
    description="`dry_run=true`: the request would be accepted; nothing was recorded.",
    example={"valid": True, "total": 2, "partitions": 2, "replay_of": None},
)
@links(blp, 202, *JOB_FOLLOW_UPS, job_id=JOB_ID)
@problems(blp, 400, 408, 409, 413, 415)
def submit(callback_url: str | None, deadline: str | None, dry_run: bool) -> Response:
    """Submit a bulk request: all operations are accepted together, or none is.

    With `Idempotency-Key`, the same key and body within 24 hours answer with the
    original job (header `Idempotent-Replayed: true`) and record nothing new. With
    `dry_run=true`, every check runs and nothing is recorded: 200 with the verdict.
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
    if dry_run:
        return admission.dry_run(job, now)
    return admission.accept(job, now)


def _idempotency(digest: Hash | None) -> Idempotency | None:
    """The Idempotency-Key and the request's fingerprint: the body as decoded (so the
    same operations compressed or not are the same request), its media type, its query
    (less ``dry_run``)."""
    key = idempotency_key()
    if key is None or digest is None:
        return None
    digest.update(b"\0" + request.mimetype.encode() + b"\0" + fingerprinted_query())
    return Idempotency(key, digest.hexdigest())
