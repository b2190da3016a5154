"""Bulk submission: validate everything, record it in one transaction, answer 202."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

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
from bulkapi.core.keys import ResourceKey, partition_of
from bulkapi.core.operations import Operation
from bulkapi.core.validation import (
    check_callback_url,
    check_metadata,
    parse_deadline,
    parse_keys,
    parse_operations,
)
from bulkapi.store.admission import Idempotency, NewJob, overlaps
from bulkapi.store.database import utcnow

#: Operations from which a job's keys go to the database while its documents are checked.
OVERLAP_FROM = 500

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
    envelope, items = body.envelope, body.items
    now = utcnow()
    check_callback_url(envelope.callback_url, allow_private=settings.allow_private_callbacks)
    check_metadata(envelope.metadata, settings.admission_limits, orjson.dumps)
    job_deadline = parse_deadline(envelope.deadline, now)
    idempotency = _idempotency(body.digest)
    del body  # the raw items live on until checked: then only their documents do

    def checked(keys: list[ResourceKey] | None = None) -> list[Operation]:
        with collector_paused(len(items)):
            operations = parse_operations(items, settings.admission_limits, orjson.dumps, keys)
            rt.registry.check_operations(operations)
        return operations

    # A large job's keys go ahead: the database locks and numbers them while the rest is
    # checked. Not for a small job (the check is shorter than the round trips the overlap
    # costs), not where nothing runs beside the checks (``overlaps``), not for a dry run
    # (nothing to overlap), nor with a callback URL: its lookup is the one check that may
    # wait (on DNS), and it comes last, so invalid requests never wait on it, and never
    # with the keys locked.
    keys = None
    if (
        len(items) >= OVERLAP_FROM
        and overlaps(rt.engine)
        and not (dry_run or envelope.callback_url)
    ):
        with collector_paused(len(items)):
            keys = parse_keys(items, settings.admission_limits.max_operations)
    operations: list[Operation] | Callable[[], list[Operation]]
    if keys is None:
        operations = checked()
        callback_lookups().check(
            envelope.callback_url, allow_private=settings.allow_private_callbacks
        )
        keys = [op.key for op in operations]
    else:
        operations = partial(checked, keys)
    job = NewJob(
        tenant_id,
        keys,
        [partition_of(tenant_id, key, settings.partitions) for key in keys],
        envelope.callback_url,
        envelope.metadata,
        job_deadline,
        idempotency,
    )
    if dry_run:
        return admission.dry_run(job, now)
    return admission.accept(job, operations, now)


def _idempotency(digest: Hash | None) -> Idempotency | None:
    """The Idempotency-Key and the request's fingerprint: the body as decoded (so the
    same operations compressed or not are the same request), its media type, its query
    (less ``dry_run``)."""
    key = idempotency_key()
    if key is None or digest is None:
        return None
    digest.update(b"\0" + request.mimetype.encode() + b"\0" + fingerprinted_query())
    return Idempotency(key, digest.hexdigest())
