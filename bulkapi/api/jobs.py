"""Jobs: status, long poll, results, list and cancel."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import orjson
from flask import Response, request, stream_with_context
from flask_smorest import Blueprint

from bulkapi.api.auth import check_job_id, require_job_reader, require_tenant
from bulkapi.api.context import runtime
from bulkapi.api.documented import JOB_FOLLOW_UPS, JOB_ID, links, problems
from bulkapi.api.holds import may_wait, try_wait
from bulkapi.api.pagination import decode_cursor, page_body
from bulkapi.api.representations import delivery_body, job_body, result_body
from bulkapi.api.responses import json_response
from bulkapi.api.schemas import (
    DeliveriesSchema,
    JobListArgs,
    JobPageSchema,
    JobSchema,
    JobWaitArgs,
    ResultArgs,
    ResultPageSchema,
)
from bulkapi.api.waiting import waiting_on_of
from bulkapi.core.errors import RateLimited
from bulkapi.polling import Poll
from bulkapi.store.database import reading, single_read, utcnow
from bulkapi.store.jobs import (
    JobRecord,
    ResultFilter,
    cancel,
    get_job,
    list_jobs,
    list_results,
)
from bulkapi.store.webhooks import delivery_of_job

blp = Blueprint(
    "jobs",
    __name__,
    url_prefix="/v1/jobs",
    description="Follow bulk jobs: status, progress, per-operation results.",
)

#: Results read per query when streaming NDJSON, and sent in one write.
_STREAM_PAGE = 2000
_FIRST_POLL_SECONDS = 0.05
_LAST_POLL_SECONDS = 0.5


def read_job(tenant_id: str, job_id: str) -> JobRecord:
    """The tenant's job (404 ``NotFound`` otherwise), read beside any writer: one
    statement, so one round trip on PostgreSQL (each look of a long poll is one)."""
    with single_read(runtime().engine) as conn:
        return get_job(conn, tenant_id, job_id)


@blp.route("/<job_id>", methods=["GET"])
@blp.arguments(JobWaitArgs, location="query", as_kwargs=True)
@blp.response(200, JobSchema)
@blp.doc(operationId="getJob")
@links(blp, 200, *JOB_FOLLOW_UPS[1:], job_id=JOB_ID)
@problems(blp, 404)
def get(job_id: str, wait: float) -> Response:
    """A job's state; with `wait=N` answers as soon as it is terminal, or after N seconds."""
    tenant_id = require_job_reader(job_id)
    poll = Poll(wait, _LAST_POLL_SECONDS, first=_FIRST_POLL_SECONDS)
    job = read_job(tenant_id, job_id)
    with may_wait(tenant_id, wanted=wait > 0 and not job.status.is_terminal) as waiting:
        while waiting and not job.status.is_terminal and poll.sleep():
            job = read_job(tenant_id, job_id)
    headers = {} if job.status.is_terminal else {"Retry-After": str(runtime().settings.retry_after)}
    return json_response(job_body(job, waiting_on_of(tenant_id, job)), headers=headers)


def _stream_results(
    job_id: str, wanted: ResultFilter, release: Callable[[], None]
) -> Iterator[bytes]:
    """The results page by page; the wait slot is given back as soon as the last is
    sent (and, by the response, if the stream is closed before)."""
    after = -1
    try:
        while True:
            with reading(runtime().engine) as conn:
                page = list(list_results(conn, job_id, wanted, _STREAM_PAGE, after))
            yield b"".join(orjson.dumps(result_body(result)) + b"\n" for result in page)
            if len(page) < _STREAM_PAGE:
                return
            after = page[-1].index
    finally:
        release()


def _results_stream(tenant_id: str, job_id: str, wanted: ResultFilter) -> Response:
    """All results as NDJSON. The stream holds a server thread for as long as its reader
    takes, so it needs one of the process's wait slots (``api/holds.py``), as an event
    stream does: without one, 429 ``too_many_streams`` (the paginated JSON form needs
    none). A reader that stops reading is cut off after ``BULKAPI_SEND_TIMEOUT``
    (``server.py``), which gives the slot back."""
    release = try_wait(tenant_id)
    if release is None:
        raise RateLimited(
            "This tenant has as many streams and waiting requests open on this server as "
            "it may; retry after Retry-After, or read the results page by page as JSON.",
            runtime().settings.retry_after,
            code="too_many_streams",
        )
    response = Response(
        stream_with_context(_stream_results(job_id, wanted, release)),
        mimetype="application/x-ndjson",
    )
    response.call_on_close(release)
    return response


@blp.route("/<job_id>/results", methods=["GET"])
@blp.arguments(ResultArgs, location="query", as_kwargs=True)
@blp.response(
    200,
    ResultPageSchema,
    description="In request order. With `Accept: application/x-ndjson`, every result "
    "(filtered, not paginated) as NDJSON: one `Result` per line.",
)
@blp.doc(
    operationId="listJobResults",
    responses={
        200: {
            "content": {"application/x-ndjson": {"schema": {"$ref": "#/components/schemas/Result"}}}
        }
    },
)
@problems(blp, 404)
def results(
    job_id: str,
    status: str | None,
    effects_status: str | None,
    limit: int,
    cursor: str | None,
) -> Response:
    """Per-operation results in request order; `Accept: application/x-ndjson` streams all."""
    wanted = ResultFilter(status, effects_status)
    tenant_id = require_job_reader(job_id)
    read_job(tenant_id, job_id)  # 404 unless the job is the caller's
    if request.accept_mimetypes.best_match(["application/json", "application/x-ndjson"]) == (
        "application/x-ndjson"
    ):
        return _results_stream(tenant_id, job_id, wanted)
    after = decode_cursor(cursor, int)
    with reading(runtime().engine) as conn:
        page = list(list_results(conn, job_id, wanted, limit + 1, -1 if after is None else after))  # type: ignore[arg-type]
    return json_response(page_body(page, limit, result_body, lambda result: result.index))


@blp.route("/<job_id>/deliveries", methods=["GET"])
@blp.response(200, DeliveriesSchema)
@blp.doc(operationId="listJobDeliveries")
@problems(blp, 404)
def deliveries(job_id: str) -> Response:
    """Webhook delivery attempts to the job's `callback_url`, oldest first.

    `items` lists every attempt; `delivery` (absent until the job has finished with a
    callback URL) carries the webhook id and the overall status: pending, delivered or
    failed.
    """
    tenant_id = require_tenant()  # not a status token: those read only
    check_job_id(job_id)  # the job's status, results and events
    read_job(tenant_id, job_id)  # 404 unless the job is the caller's
    with reading(runtime().engine) as conn:
        found = delivery_of_job(conn, job_id)
    return json_response(delivery_body(found))


@blp.route("/<job_id>/cancel", methods=["POST"])
@blp.response(202, JobSchema)
@blp.doc(operationId="cancelJob")
@links(blp, 202, JOB_FOLLOW_UPS[0], job_id=JOB_ID)
@problems(blp, 404, 409)
def cancel_job(job_id: str) -> Response:
    """Cancel the operations not yet applied; those applied stay applied."""
    tenant_id = require_tenant()
    check_job_id(job_id)
    rt = runtime()
    with rt.engine.begin() as conn:
        webhook = cancel(conn, tenant_id, job_id, utcnow())
    if webhook:
        rt.wake_webhook_sender()
    return json_response(job_body(read_job(tenant_id, job_id)), 202)


@blp.route("", methods=["GET"])
@blp.arguments(JobListArgs, location="query", as_kwargs=True)
@blp.response(200, JobPageSchema)
@blp.doc(operationId="listJobs")
@problems(blp)
def list_all(status: str | None, limit: int, cursor: str | None) -> Response:
    """The tenant's jobs, newest first."""
    tenant_id = require_tenant()
    before = decode_cursor(cursor, str)
    with single_read(runtime().engine) as conn:
        page = list_jobs(conn, tenant_id, status, limit + 1, before)  # type: ignore[arg-type]
    return json_response(page_body(page, limit, job_body, lambda job: job.id))
