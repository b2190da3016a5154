"""Helpers for the HTTP contract tests: problem-body checks, held drains, small limits."""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from werkzeug.test import TestResponse

from bulkapi.api.app import create_app
from bulkapi.core.keys import ResourceKey, partition_of
from bulkapi.dispatch.drainer import drain_batch
from bulkapi.runtime import Runtime
from bulkapi.store.database import utcnow
from bulkapi.store.jobs import settle
from bulkapi.store.tenants import authenticate
from tests.conftest import (
    InProcessApi,
    Service,
    embedded_service,
    lock_all_partitions,
    service_in,
)

#: Fields every job representation carries at least.
JOB_FIELDS = {
    "id",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "total",
    "counts",
    "progress",
    "status_history",
    "callback_url",
    "metadata",
    "links",
}
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}
#: Headers of a raw body sent as one JSON document, or as NDJSON lines.
JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}

#: Limits of the ``limited`` service: small enough to cross with a handful of bytes.
SMALL_MAX_OPERATIONS = 5
SMALL_MAX_BODY_BYTES = 4096
SMALL_MAX_DOCUMENT_BYTES = 256


def assert_problem(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and machine code."""
    body = response.get_json(force=True, silent=True)
    assert response.status_code == status, (response.status_code, body)
    assert response.mimetype == "application/problem+json", response.mimetype
    assert isinstance(body, dict), response.data
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["code"] == code, body
    assert all(isinstance(body[name], str) and body[name] for name in ("type", "title", "detail"))
    return body


def assert_job_representation(job: dict[str, Any]) -> None:
    assert job.keys() >= JOB_FIELDS, job
    assert job["links"] == {
        "self": f"/v1/jobs/{job['id']}",
        "results": f"/v1/jobs/{job['id']}/results",
    }
    assert_counts_add_up(job)


def assert_counts_add_up(job: dict[str, Any]) -> None:
    counts = job["counts"]
    assert set(counts) == {"pending", "succeeded", "failed", "cancelled"}
    assert sum(counts.values()) == job["total"], job
    assert job["progress"] == pytest.approx((job["total"] - counts["pending"]) / job["total"])


def parse_time(value: str) -> datetime:
    """An RFC 3339 UTC timestamp as the API writes it."""
    assert value.endswith("Z"), value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.utcoffset() == UTC.utcoffset(None)
    return moment


def tenant_of(service: Service, api: InProcessApi) -> str:
    with service.runtime.engine.connect() as conn:
        principal = authenticate(conn, api.key)
    assert principal is not None
    return principal.tenant_id


def partition(service: Service, api: InProcessApi, rtype: str, rid: str) -> int:
    return partition_of(
        tenant_of(service, api), ResourceKey(rtype, rid), service.runtime.settings.partitions
    )


def ids_in_distinct_partitions(
    service: Service, api: InProcessApi, rtype: str, count: int
) -> list[str]:
    """``count`` resource ids of ``rtype`` that all land in different partitions."""
    found: dict[int, str] = {}
    candidate = 0
    while len(found) < count:
        rid = f"k{candidate}"
        found.setdefault(partition(service, api, rtype, rid), rid)
        candidate += 1
    return list(found.values())


class HeldDrains:
    """Every drain held back (as ``service.drains_paused()``), but the test may drain
    one partition by hand: a job can then be seen half applied, deterministically."""

    def __init__(self, service: Service, holder: Connection | None) -> None:
        self.service = service
        self.holder = holder

    def drain(self, partition: int) -> None:
        runtime = self.service.runtime
        drain = functools.partial(
            drain_batch,
            partitions=[partition],
            batch_size=runtime.settings.batch_size,
            now=utcnow(),
            decide=runtime.decide,
            policy=runtime.rule_retries,
            keep_history=runtime.settings.history_versions,
            spill=False,
        )
        if self.holder is None:  # embedded: SQLite serializes writers, no lock to take
            with runtime.engine.begin() as conn:
                result = drain(conn)
            with runtime.engine.begin() as conn:
                settle(conn, result.done_jobs, utcnow())
        else:  # the session holding every partition lock may take them again
            result = drain(self.holder)
            self.holder.commit()
            settle(self.holder, result.done_jobs, utcnow())
            self.holder.commit()
        assert not result.busy and result.read > 0


@contextmanager
def drains_held(service: Service) -> Iterator[HeldDrains]:
    if service.mode == "embedded":
        with service.drains_paused():
            yield HeldDrains(service, None)
        return
    with service.runtime.engine.connect() as conn:
        lock_all_partitions(conn, service.runtime.settings.partitions)
        try:
            yield HeldDrains(service, conn)
        finally:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock_all()"))
            conn.commit()


def strict_types(service: Service) -> Iterator[Service]:
    """The same deployment with BULKAPI_STRICT_TYPES=1 (checked in the API process)."""
    runtime = Runtime(dataclasses.replace(service.runtime.settings, strict_types=True))
    try:
        yield Service(service.mode, runtime, create_app(runtime), service.workers)
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An embedded service with tiny admission limits (limits do not depend on the mode)."""
    yield from embedded_service(
        tmp_path_factory.mktemp("limited"),
        max_operations=SMALL_MAX_OPERATIONS,
        max_body_bytes=SMALL_MAX_BODY_BYTES,
        max_document_bytes=SMALL_MAX_DOCUMENT_BYTES,
    )


@pytest.fixture
def limited_api(limited: Service) -> InProcessApi:
    return limited.api(f"limited-{uuid.uuid4().hex[:10]}")


#: The example types module, as shipped.
CRM = "examples.crm"


@pytest.fixture(scope="session", params=["embedded", "postgres"])
def crm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The service with BULKAPI_TYPES=examples.crm, on both modes."""
    yield from service_in(
        request.param, tmp_path_factory.mktemp(f"crm-{request.param}"), types_module=CRM
    )


@pytest.fixture
def crm_api(crm: Service) -> InProcessApi:
    return crm.api()
