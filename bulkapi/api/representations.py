"""JSON shapes of jobs, results and resources (described by ``schemas``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bulkapi.core.effects import summary_status
from bulkapi.store.effects import EffectRecord
from bulkapi.store.history import HistoryEntry
from bulkapi.store.jobs import JobRecord, ResultRecord
from bulkapi.store.resources import StoredResource
from bulkapi.store.waiting import Blocker
from bulkapi.store.webhooks import DeliveryRecord


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def job_links(job_id: str) -> dict[str, str]:
    return {"self": f"/v1/jobs/{job_id}", "results": f"/v1/jobs/{job_id}/results"}


def job_body(job: JobRecord, waiting_on: Sequence[Blocker] | None = None) -> dict[str, Any]:
    """The job. ``waiting_on`` costs a query for an open job, so only a single job's
    read computes it; a finished job waits on nothing, and says so everywhere."""
    counts = job.counts
    body: dict[str, Any] = {
        "id": job.id,
        "status": job.status.value,
        "created_at": rfc3339(job.created_at),
        "started_at": rfc3339(job.started_at),
        "finished_at": rfc3339(job.finished_at),
        "total": counts.total,
        "counts": {
            "pending": counts.pending,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
        },
        "progress": counts.progress,
        "status_history": [
            {"status": status.value, "at": rfc3339(at)} for status, at in job.history
        ],
        "callback_url": job.callback_url,
        "metadata": job.metadata,
        "deadline": rfc3339(job.deadline),
        "links": job_links(job.id),
        "retry_of": job.retry_of,
        "retried_by": list(job.retried_by),
    }
    if waiting_on is None and job.status.is_terminal:
        waiting_on = ()
    if waiting_on is not None:
        body["waiting_on"] = [
            {"job_id": blocker.job_id, "operations": blocker.operations} for blocker in waiting_on
        ]
    return body


def result_body(result: ResultRecord) -> dict[str, Any]:
    body: dict[str, Any] = {
        "index": result.index,
        "op": result.op,
        "type": result.type,
        "id": result.id,
        "status": result.status,
    }
    if result.version is not None:
        body["version"] = result.version
    if result.error_code is not None:
        body["error"] = {"code": result.error_code, "message": result.error_message or ""}
    status = summary_status(effect.status for effect in result.effects)
    if status is not None:
        body["effects_status"] = status.value
        body["effects"] = [effect_body(effect) for effect in result.effects]
    return body


def effect_body(effect: EffectRecord) -> dict[str, Any]:
    return {
        "name": effect.name,
        "status": effect.status,
        "attempts": effect.attempts,
        "last_error": effect.last_error,
        "version": effect.version,
        "operation_id": effect.operation_id,
        "job_id": effect.job_id,
        "index": effect.index,
        "created_at": rfc3339(effect.created_at),
        "finished_at": rfc3339(effect.finished_at),
    }


def history_body(entry: HistoryEntry, effects: Sequence[EffectRecord]) -> dict[str, Any]:
    source: dict[str, Any] | str = (
        "sync" if entry.job_id is None else {"job_id": entry.job_id, "index": entry.index}
    )
    return {
        "version": entry.version,
        "op": entry.op,
        "source": source,
        "applied_at": rfc3339(entry.applied_at),
        "effects": [effect_body(effect) for effect in effects],
    }


def resource_body(resource: StoredResource) -> dict[str, Any]:
    return {
        "type": resource.type,
        "id": resource.id,
        "version": resource.version,
        "data": resource.data,
        "updated_at": rfc3339(resource.updated_at),
    }


def delivery_body(delivery: DeliveryRecord | None) -> dict[str, Any]:
    """A job's webhook attempts; ``{"items": []}`` when it has no delivery (yet)."""
    if delivery is None:
        return {"items": []}
    return {
        "items": [
            {
                "attempt": attempt.attempt,
                "at": rfc3339(attempt.at),
                "status_code": attempt.status_code,
                "error": attempt.error,
                "duration_ms": attempt.duration_ms,
            }
            for attempt in delivery.attempts
        ],
        "delivery": {
            "webhook_id": delivery.id,
            "url": delivery.url,
            "status": delivery.status,
            "attempts": len(delivery.attempts),
            "next_attempt_at": rfc3339(delivery.next_attempt_at),
            "created_at": rfc3339(delivery.created_at),
            "finished_at": rfc3339(delivery.finished_at),
        },
    }
