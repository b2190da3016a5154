"""Retry of a finished job: its failed and cancelled operations, again, as a new job."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import orjson
from flask import Response, request
from flask_smorest import Blueprint
from marshmallow import ValidationError

from bulkapi.api import admission
from bulkapi.api.admission import idempotency_key
from bulkapi.api.auth import check_job_id, require_tenant
from bulkapi.api.bodies import read_document
from bulkapi.api.context import runtime
from bulkapi.api.documented import (
    IDEMPOTENCY_KEY,
    JOB_FOLLOW_UPS,
    JOB_ID,
    SUBMITTED,
    links,
    problems,
)
from bulkapi.api.schemas import RetryRequestSchema, SubmittedJobSchema
from bulkapi.core.errors import ValidationFailed
from bulkapi.core.keys import partition_of
from bulkapi.store.admission import Idempotency, NewJob
from bulkapi.store.database import reading, utcnow
from bulkapi.store.retries import RetrySource, retry_source

blp = Blueprint(
    "retries",
    __name__,
    url_prefix="/v1/jobs",
    description="Run the failed and cancelled operations of a finished job again.",
)

#: Largest retry body taken: a short list of codes.
MAX_RETRY_BODY = 4096


@blp.route("/<job_id>/retry", methods=["POST"])
@blp.doc(
    operationId="retryJob",
    parameters=[IDEMPOTENCY_KEY],
    requestBody={
        "required": False,
        "description": "Without a body, every failed and cancelled operation is retried.",
        "content": {"application/json": {"schema": RetryRequestSchema}},
    },
)
@blp.response(
    202,
    SubmittedJobSchema,
    description="Accepted (or replayed): the new job, with `retry_of` set, to follow at "
    "`Location`.",
    headers=SUBMITTED,
)
@links(blp, 202, *JOB_FOLLOW_UPS, job_id=JOB_ID)
@problems(blp, 404, 409, 413, 415)
def retry(job_id: str) -> Response:
    """Run again, as a new job, the failed and cancelled operations of a finished job.

    They keep their original order and their `if_version`; `codes` selects them by
    result error code (`cancelled`: those a cancel request cancelled). API key only.
    """
    tenant_id = require_tenant()
    check_job_id(job_id)
    codes = _codes()
    key = idempotency_key()
    rt = runtime()
    with reading(rt.engine) as conn:
        source = retry_source(conn, tenant_id, job_id, codes)
    _check_types(source)
    settings = rt.settings
    keys = [op.key for op in source.operations]
    job = NewJob(
        tenant_id,
        keys,
        [partition_of(tenant_id, key, settings.partitions) for key in keys],
        source.callback_url,
        source.metadata,
        idempotency=None if key is None else Idempotency(key, _fingerprint(job_id, codes)),
        retry_of=job_id,
    )
    return admission.accept(job, source.operations, utcnow())


def _codes() -> list[str] | None:
    """The codes the body names; None without a body (or without ``codes``): retry all."""
    if not request.content_length and "Transfer-Encoding" not in request.headers:
        return None
    body = read_document(MAX_RETRY_BODY)
    try:
        loaded = RetryRequestSchema().load(body)
    except ValidationError as error:
        raise ValidationFailed("The retry request is invalid.", _as_dict(error.messages)) from None
    codes: list[str] | None = loaded.get("codes")
    return codes


def _as_dict(messages: dict[str, object] | list[object]) -> dict[str, object]:
    """marshmallow's messages as JSON can carry them: list positions become string keys."""
    found = orjson.loads(orjson.dumps(messages, option=orjson.OPT_NON_STR_KEYS))
    return found if isinstance(found, dict) else {"_schema": found}


def _check_types(source: RetrySource) -> None:
    """The registry's checks again (types may have changed since), errors keyed by the
    operations' indexes in the original job."""
    try:
        runtime().registry.check_operations(source.operations)
    except ValidationFailed as error:
        raise type(error)(
            error.detail,
            {str(source.indexes[int(index)]): found for index, found in error.errors.items()},
        ) from None


def _fingerprint(job_id: str, codes: Sequence[str] | None) -> str:
    """What makes two retry requests the same request: the job and the set of codes."""
    request_shape = {"retry": job_id, "codes": None if codes is None else sorted(set(codes))}
    return hashlib.sha256(orjson.dumps(request_shape)).hexdigest()
