"""The end of an admission, shared by submits and retries: a dry run's verdict, or the
job recorded, its partitions woken and the 202 answer."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from flask import Response, request

from bulkapi.api.context import runtime
from bulkapi.api.representations import job_body
from bulkapi.api.responses import json_response
from bulkapi.core.errors import ValidationFailed
from bulkapi.core.jobs import Counts, JobStatus
from bulkapi.core.operations import Operation
from bulkapi.dispatch.lanes import Lane
from bulkapi.store.admission import NewJob, admitting, check_pending_cap, replayed_job
from bulkapi.store.database import reading
from bulkapi.store.jobs import JobRecord, get_job

#: Exit status of the injected crash (BULKAPI_FAULT_CRASH_AFTER_COMMIT), as after SIGKILL.
CRASH_EXIT_CODE = 137
#: Longest Idempotency-Key accepted (the column's size).
MAX_IDEMPOTENCY_KEY = 255
#: The query parameter that asks for a dry run.
DRY_RUN = b"dry_run"


def idempotency_key() -> str | None:
    """The request's ``Idempotency-Key``, if any; 422 unless it is one we can store."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
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
    return key


def fingerprinted_query() -> bytes:
    """The query string as an Idempotency-Key compares it: without ``dry_run``, so a dry
    run and the real submit of one request are the same request. The other bytes are
    kept as sent, so requests without ``dry_run`` compare exactly as they always did."""
    return b"&".join(
        part for part in request.query_string.split(b"&") if part.split(b"=", 1)[0] != DRY_RUN
    )


def dry_run(job: NewJob, now: datetime) -> Response:
    """200 with what a submit would admit, after the checks the transaction would make
    (the Idempotency-Key, then, unless that names a job to replay, the pending cap);
    nothing is written."""
    rt = runtime()
    with reading(rt.engine) as conn:
        earlier = (
            None
            if job.idempotency is None
            else replayed_job(conn, job.tenant_id, job.idempotency, now)
        )
        if earlier is None:
            check_pending_cap(
                conn, job.tenant_id, len(job.keys), rt.settings.max_pending_operations
            )
    return json_response(
        {
            "valid": True,
            "total": len(job.keys),
            "partitions": len(set(job.partitions)),
            "replay_of": None if earlier is None else earlier[0],
        }
    )


def accept(
    job: NewJob,
    operations: Sequence[Operation] | Callable[[], Sequence[Operation]],
    now: datetime,
) -> Response:
    """Record a job (or find the one its Idempotency-Key names), wake its partitions and
    answer 202 with it and its status token.

    ``operations``: the job's operations, checked already, or the check that returns
    them (raising as a request that is not valid), to run while the database works on
    the job's keys; if it raises, nothing is recorded.
    """
    rt = runtime()
    settings = rt.settings
    overlap = callable(operations)
    with (
        rt.engine.begin() as conn,
        admitting(
            conn, job, now, pending_cap=settings.max_pending_operations, overlap=overlap
        ) as admission,
    ):
        admitted = admission.write(operations() if callable(operations) else operations)
    if settings.fault_crash_after_commit:
        os._exit(CRASH_EXIT_CODE)
    headers = {"Location": f"/v1/jobs/{admitted.job_id}", "Retry-After": str(settings.retry_after)}
    if admitted.replayed:
        with reading(rt.engine) as conn:
            record = get_job(conn, job.tenant_id, admitted.job_id)
        headers["Idempotent-Replayed"] = "true"
    else:
        small = len(job.keys) <= settings.prompt_job_operations
        rt.waker.wake(admitted.partitions, lane=Lane.PROMPT if small else Lane.REGULAR)
        # Built from what was just written: the 202 does not read the job back.
        record = JobRecord(
            admitted.job_id,
            JobStatus.QUEUED,
            admitted.created_at,
            None,
            None,
            Counts(len(job.keys)),
            [(JobStatus.QUEUED, admitted.created_at)],
            job.callback_url,
            job.metadata,
            job.deadline,
            retry_of=job.retry_of,
        )
    representation: dict[str, Any] = job_body(record)
    representation["status_token"] = admitted.status_token
    return json_response(representation, 202, headers)
