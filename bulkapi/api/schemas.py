"""Marshmallow schemas: query arguments, and the shapes the OpenAPI document promises.

Bodies on the hot paths are built and parsed by hand (see ``representations`` and
``bodies``); these schemas describe exactly those shapes for integrators and for
schema-driven tests.
"""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, fields, post_load, validate

from bulkapi.core.effects import EffectStatus
from bulkapi.core.jobs import JobStatus
from bulkapi.core.operations import OpKind, OpStatus
from bulkapi.core.retries import RETRY_CODES
from bulkapi.core.webhooks import DeliveryStatus

#: Largest page a list endpoint returns.
MAX_PAGE = 1000
DEFAULT_PAGE = 100


class _Strict(Schema):
    class Meta:
        ordered = True


class _Query(_Strict):
    """Query arguments. An optional one left out reaches the view as None; documented
    as optional, not as nullable (a query string cannot spell null)."""

    @post_load
    def _absent_as_none(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {name: None for name in self.load_fields} | data


class PageArgs(_Query):
    limit = fields.Integer(load_default=DEFAULT_PAGE, validate=validate.Range(1, MAX_PAGE))
    cursor = fields.String(
        validate=validate.Length(max=512),
        metadata={"description": "The `next_cursor` of the previous page."},
    )


class JobListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf([s.value for s in JobStatus]))


class ResultArgs(PageArgs):
    status = fields.String(validate=validate.OneOf([s.value for s in OpStatus]))
    effects_status = fields.String(
        validate=validate.OneOf([s.value for s in EffectStatus]),
        metadata={"description": "Only operations whose `effects_status` is this."},
    )


class JobWaitArgs(_Query):
    wait = fields.Float(
        load_default=0,
        validate=validate.Range(0, 60),
        metadata={"description": "Long poll: seconds to wait for a terminal status."},
    )


class BulkQueryArgs(_Query):
    callback_url = fields.String(
        validate=validate.Length(max=2048),
        metadata={"description": "For NDJSON bodies."},
    )
    deadline = fields.String(
        validate=validate.Length(max=64),
        metadata={"description": "For NDJSON bodies: RFC 3339 timestamp or seconds."},
    )
    dry_run = fields.Boolean(
        load_default=False,
        metadata={
            "description": "`true`: run every check, record nothing, answer 200 with a "
            "`DryRun` instead of 202 with a job."
        },
    )


class CountsSchema(_Strict):
    pending = fields.Integer(required=True)
    succeeded = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    cancelled = fields.Integer(required=True)


class StatusEntrySchema(_Strict):
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in JobStatus]))
    at = fields.DateTime(required=True)


class JobLinksSchema(_Strict):
    self = fields.String(required=True)
    results = fields.String(required=True)


class WaitingOnSchema(_Strict):
    job_id = fields.String(required=True, metadata={"description": "A job holding earlier work."})
    operations = fields.Integer(
        required=True,
        metadata={"description": "How many of this job's operations wait behind that job."},
    )


class JobSchema(_Strict):
    """A bulk job: its status, counts and timeline."""

    id = fields.String(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf([s.value for s in JobStatus]),
        metadata={
            "description": "`queued`, then `processing`, then one terminal status: "
            "`succeeded`, `partially_succeeded`, `failed` or `cancelled`."
        },
    )
    created_at = fields.DateTime(required=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    total = fields.Integer(required=True, metadata={"description": "Operations in the job."})
    counts = fields.Nested(
        CountsSchema,
        required=True,
        metadata={"description": "Always adds up to `total`."},
    )
    progress = fields.Float(
        required=True, metadata={"description": "`(total - pending) / total`, 0.0 to 1.0."}
    )
    status_history = fields.List(
        fields.Nested(StatusEntrySchema),
        required=True,
        metadata={"description": "Every status the job entered, once, oldest first."},
    )
    callback_url = fields.String(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    deadline = fields.DateTime(allow_none=True)
    links = fields.Nested(JobLinksSchema, required=True)
    retry_of = fields.String(
        allow_none=True,
        metadata={"description": "The job whose failed operations this job runs again."},
    )
    retried_by = fields.List(
        fields.String(),
        metadata={"description": "The retries of this job (`POST .../retry`), newest last."},
    )
    waiting_on = fields.List(
        fields.Nested(WaitingOnSchema),
        metadata={
            "description": "Only in `GET /v1/jobs/{job_id}`: up to 10 other jobs holding "
            "earlier pending operations on resources this job writes, oldest first; "
            "empty once nothing blocks it.",
            "example": [{"job_id": "job_01m8xftb4h9emxgp7frxps8yzm", "operations": 120}],
        },
    )


class SubmittedJobSchema(JobSchema):
    status_token = fields.String(
        required=True,
        metadata={"description": "Bearer token that reads only this job (status, results)."},
    )


class DryRunSchema(_Strict):
    """What a submit would admit: answered by `dry_run=true`, with nothing recorded."""

    valid = fields.Boolean(required=True, metadata={"description": "Always `true`."})
    total = fields.Integer(required=True, metadata={"description": "Operations in the request."})
    partitions = fields.Integer(
        required=True, metadata={"description": "Distinct partitions the operations fall in."}
    )
    replay_of = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "The job an earlier request with this `Idempotency-Key` and the "
            "same body created: a real submit would answer with it and record nothing."
        },
    )


class RetryRequestSchema(_Strict):
    """Which failed or cancelled operations a retry runs again (all of them without
    `codes`)."""

    codes = fields.List(
        fields.String(validate=validate.OneOf(RETRY_CODES)),
        validate=validate.Length(min=1, max=len(RETRY_CODES)),
        metadata={
            "description": "Result error codes to retry; `cancelled` selects operations a "
            "cancel request cancelled (they have no error code).",
            "example": ["not_found", "apply_failed"],
        },
    )


class JobPageSchema(_Strict):
    items = fields.List(fields.Nested(JobSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class OperationSchema(_Strict):
    op = fields.String(required=True, validate=validate.OneOf([k.value for k in OpKind]))
    type = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_-]{0,63}$"))
    id = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9._:-]{1,128}$"))
    data = fields.Dict(metadata={"description": "Required for upsert and patch; not for delete."})
    if_version = fields.Integer(validate=validate.Range(min=0))


class BulkRequestSchema(_Strict):
    operations = fields.List(fields.Nested(OperationSchema), required=True)
    callback_url = fields.String(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    deadline = fields.Raw(
        allow_none=True,
        metadata={
            "description": "RFC 3339 timestamp, or seconds from now: operations "
            "not applied by then are cancelled with deadline_exceeded."
        },
    )


class ResultErrorSchema(_Strict):
    code = fields.String(required=True)
    message = fields.String(required=True)


_EFFECT_STATUSES = validate.OneOf([s.value for s in EffectStatus])


class EffectSchema(_Strict):
    name = fields.String(required=True)
    status = fields.String(required=True, validate=_EFFECT_STATUSES)
    attempts = fields.Integer(required=True)
    last_error = fields.String(required=True, allow_none=True)
    version = fields.Integer(required=True, metadata={"description": "The change's version."})
    operation_id = fields.String(
        required=True, metadata={"description": "The handler's idempotency key."}
    )
    job_id = fields.String(required=True, allow_none=True)
    index = fields.Integer(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    finished_at = fields.DateTime(required=True, allow_none=True)


class EffectPageSchema(_Strict):
    items = fields.List(fields.Nested(EffectSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class ResultSchema(_Strict):
    """The outcome of one operation of a job."""

    index = fields.Integer(
        required=True, metadata={"description": "The operation's 0-based position."}
    )
    op = fields.String(required=True)
    type = fields.String(required=True)
    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in OpStatus]))
    version = fields.Integer(metadata={"description": "The version the operation produced."})
    error = fields.Nested(
        ResultErrorSchema,
        metadata={
            "description": "Why it failed: `version_mismatch`, `not_found`, `rule_rejected`, "
            "`apply_failed` or `deadline_exceeded`."
        },
    )
    effects_status = fields.String(
        validate=_EFFECT_STATUSES,
        metadata={"description": "failed if any effect failed, else pending until all ran."},
    )
    effects = fields.List(fields.Nested(EffectSchema))


class ResultPageSchema(_Strict):
    items = fields.List(fields.Nested(ResultSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class DeliveryAttemptSchema(_Strict):
    attempt = fields.Integer(required=True, metadata={"description": "1-based."})
    at = fields.DateTime(required=True)
    status_code = fields.Integer(
        required=True, allow_none=True, metadata={"description": "null: no answer."}
    )
    error = fields.String(
        required=True, allow_none=True, metadata={"description": "null when answered 2xx."}
    )
    duration_ms = fields.Integer(
        required=True, allow_none=True, metadata={"description": "null until it ended."}
    )


class DeliverySchema(_Strict):
    webhook_id = fields.String(
        required=True, metadata={"description": "The webhook-id header, the same on retries."}
    )
    url = fields.String(required=True)
    status = fields.String(
        required=True, validate=validate.OneOf([s.value for s in DeliveryStatus])
    )
    attempts = fields.Integer(required=True)
    next_attempt_at = fields.DateTime(
        required=True, allow_none=True, metadata={"description": "While pending."}
    )
    created_at = fields.DateTime(required=True)
    finished_at = fields.DateTime(required=True, allow_none=True)


class DeliveriesSchema(_Strict):
    items = fields.List(fields.Nested(DeliveryAttemptSchema), required=True)
    delivery = fields.Nested(
        DeliverySchema,
        metadata={"description": "Absent until the job finished with a callback_url."},
    )


class ResourceSchema(_Strict):
    """One resource with its current version (also in the `ETag` header)."""

    type = fields.String(required=True)
    id = fields.String(required=True)
    version = fields.Integer(
        required=True, metadata={"description": "1 when created, +1 on every applied write."}
    )
    data = fields.Dict(required=True)
    updated_at = fields.DateTime(required=True)


class HistoryEntrySchema(_Strict):
    version = fields.Integer(required=True, metadata={"description": "The version it made."})
    op = fields.String(required=True, validate=validate.OneOf([k.value for k in OpKind]))
    source = fields.Raw(
        required=True,
        metadata={
            "description": 'The bulk operation that made it ({"job_id", "index"}), or "sync".',
            "oneOf": [
                {
                    "type": "object",
                    "required": ["job_id", "index"],
                    "properties": {"job_id": {"type": "string"}, "index": {"type": "integer"}},
                    "additionalProperties": False,
                },
                {"type": "string", "enum": ["sync"]},
            ],
        },
    )
    applied_at = fields.DateTime(required=True)
    effects = fields.List(
        fields.Nested(EffectSchema),
        required=True,
        metadata={"description": "The side effects this version triggered, in run order."},
    )


class HistoryPageSchema(_Strict):
    items = fields.List(fields.Nested(HistoryEntrySchema), required=True)
    next_cursor = fields.String(allow_none=True)


class ResourcePageSchema(_Strict):
    items = fields.List(fields.Nested(ResourceSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class ResourceTypeSchema(_Strict):
    name = fields.String(required=True)
    description = fields.String(required=True)
    schema = fields.Dict(
        required=True,
        allow_none=True,
        metadata={"description": "JSON Schema of data; null: free-form object."},
    )
    effects = fields.List(fields.String(), required=True)


class ResourceTypeListSchema(_Strict):
    items = fields.List(fields.Nested(ResourceTypeSchema), required=True)
    strict = fields.Boolean(
        required=True, metadata={"description": "Whether unregistered types are refused."}
    )


class DocumentSchema(_Strict):
    """A resource's document: any JSON object (a registered type's schema may narrow it)."""

    class Meta:
        unknown = INCLUDE


class DuplicateSchema(_Strict):
    type = fields.String(required=True)
    id = fields.String(required=True)
    indexes = fields.List(
        fields.Integer(), required=True, metadata={"description": "0-based, ascending."}
    )


class ProblemSchema(_Strict):
    """An RFC 9457 problem; members beyond these may be added, and clients ignore them."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True, metadata={"description": "`urn:bulkapi:problem:<code>`"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True, metadata={"description": "For people, not programs."})
    code = fields.String(
        required=True, metadata={"description": "Stable snake_case machine code: branch on this."}
    )
    errors = fields.Dict(
        metadata={"description": "What was wrong, by field (by operation index for bulk requests)."}
    )
    duplicates = fields.List(
        fields.Nested(DuplicateSchema),
        metadata={"description": "`duplicate_resource`: each key given more than once."},
    )
    job_id = fields.String(
        metadata={"description": "`resource_busy`: the oldest job holding the resource."}
    )


class JobEventSchema(_Strict):
    """One Server-Sent Event of a job's stream."""

    event = fields.String(required=True, validate=validate.OneOf(["status", "progress"]))
    id = fields.String(
        required=True,
        validate=validate.Regexp(r"^[0-9]+$"),
        metadata={
            "description": "Increases along the job's events; send the last one back "
            "as `Last-Event-ID`."
        },
    )
    data = fields.String(
        required=True,
        metadata={
            "description": "The job as JSON (a `Job`), as `GET /v1/jobs/{job_id}` answers it."
        },
    )
    retry = fields.Integer(metadata={"description": "Milliseconds to wait before reconnecting."})


class HealthSchema(_Strict):
    status = fields.String(required=True)
