"""Dry runs of bulk requests (``POST /v1/bulk?dry_run=true``) on both modes: every check a
submit makes, the same problems, and nothing written."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text

from bulkapi.core.keys import ResourceKey, partition_of
from tests.api.conftest import NDJSON, assert_problem, tenant_of
from tests.conftest import InProcessApi, Service, embedded_service

logger = logging.getLogger(__name__)

#: Tables an admission writes rows into.
ADMISSION_TABLES = ("jobs", "operations", "resources", "job_counts", "status_tokens")


def _rows(service: Service) -> dict[str, int]:
    with service.runtime.engine.connect() as conn:
        return {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ADMISSION_TABLES
        }


def _upsert(rid: str, **data: Any) -> dict[str, Any]:
    return {"op": "upsert", "type": "acct", "id": rid, "data": data}


def _dry_run(api: InProcessApi, operations: list[dict[str, Any]], **kwargs: Any) -> Any:
    return api.post("/v1/bulk?dry_run=true", json={"operations": operations}, **kwargs)


def test_a_valid_request_answers_its_verdict_and_writes_nothing(
    service: Service, api: InProcessApi
) -> None:
    operations = [_upsert(f"d{n}", n=n) for n in range(20)] + [
        {"op": "delete", "type": "acct", "id": "gone"}
    ]
    tenant = tenant_of(service, api)
    partitions = {
        partition_of(tenant, ResourceKey("acct", op["id"]), service.runtime.settings.partitions)
        for op in operations
    }
    before = _rows(service)
    response = _dry_run(api, operations)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "valid": True,
        "total": 21,
        "partitions": len(partitions),
        "replay_of": None,
    }
    assert _rows(service) == before
    assert api.get("/v1/jobs").get_json()["items"] == []
    assert api.get("/v1/resources/acct/d0").status_code == 404


def test_a_dry_run_answers_the_problems_a_submit_answers(
    service: Service, api: InProcessApi
) -> None:
    before = _rows(service)
    invalid = [_upsert("a"), {"op": "upsert", "type": "acct", "id": "bad id!", "data": {}}]
    body = assert_problem(_dry_run(api, invalid), 422, "validation_error")
    assert list(body["errors"]) == ["1"]
    twice = [_upsert("a"), _upsert("b"), _upsert("a")]
    body = assert_problem(_dry_run(api, twice), 422, "duplicate_resource")
    assert body["duplicates"] == [{"type": "acct", "id": "a", "indexes": [0, 2]}]
    schema = [{"op": "upsert", "type": "window", "id": "w", "data": {"start": 5, "end": 1}}]
    body = assert_problem(_dry_run(api, schema), 422, "validation_error")
    assert list(body["errors"]) == ["0"]
    assert_problem(_dry_run(api, []), 422, "validation_error")
    assert_problem(
        api.post("/v1/bulk?dry_run=true", data=b'{"op": "upsert"', headers=NDJSON),
        422,
        "validation_error",
    )
    assert_problem(
        api.post(
            "/v1/bulk?dry_run=true", data=b"[1, 2", headers={"Content-Type": "application/json"}
        ),
        400,
        "malformed_body",
    )
    assert_problem(
        api.post("/v1/bulk?dry_run=maybe", json={"operations": [_upsert("a")]}),
        422,
        "validation_error",
    )
    by_token = InProcessApi(api.client, api.submit([_upsert("t")])["status_token"])
    assert_problem(_dry_run(by_token, [_upsert("a")]), 401, "unauthorized")
    assert _rows(service)["operations"] == before["operations"] + 1  # the one real submit


def test_a_dry_run_compares_its_idempotency_key_as_the_submit_would(
    service: Service, api: InProcessApi
) -> None:
    operations = [_upsert("i1", n=1), _upsert("i2", n=2)]
    job = api.post(
        "/v1/bulk", json={"operations": operations}, headers={"Idempotency-Key": "import-7"}
    ).get_json()
    before = _rows(service)
    same = _dry_run(api, operations, headers={"Idempotency-Key": "import-7"})
    assert same.status_code == 200, same.get_json()
    assert same.get_json()["replay_of"] == job["id"]
    assert "Idempotent-Replayed" not in same.headers
    assert_problem(
        _dry_run(api, [_upsert("i1", n=9)], headers={"Idempotency-Key": "import-7"}),
        422,
        "idempotency_key_reused",
    )
    # A key only dry-run so far is still free: the real submit creates its job.
    fresh = _dry_run(api, [_upsert("i3")], headers={"Idempotency-Key": "import-8"})
    assert fresh.get_json()["replay_of"] is None
    assert _rows(service) == before
    real = api.post(
        "/v1/bulk", json={"operations": [_upsert("i3")]}, headers={"Idempotency-Key": "import-8"}
    )
    assert real.status_code == 202 and "Idempotent-Replayed" not in real.headers
    again = _dry_run(api, [_upsert("i3")], headers={"Idempotency-Key": "import-8"})
    assert again.get_json()["replay_of"] == real.get_json()["id"]
    # NDJSON with its fields in the query: only the dry_run parameter is left out.
    line = orjson.dumps(_upsert("i4"))
    ndjson = api.post(
        "/v1/bulk?deadline=3600", data=line, headers={**NDJSON, "Idempotency-Key": "import-9"}
    ).get_json()
    for query in ("dry_run=true&deadline=3600", "deadline=3600&dry_run=1"):
        found = api.post(
            f"/v1/bulk?{query}", data=line, headers={**NDJSON, "Idempotency-Key": "import-9"}
        )
        assert found.get_json()["replay_of"] == ndjson["id"], query
    assert_problem(
        api.post(
            "/v1/bulk?deadline=60&dry_run=true",
            data=line,
            headers={**NDJSON, "Idempotency-Key": "import-9"},
        ),
        422,
        "idempotency_key_reused",
    )
    for job_id in (job["id"], real.get_json()["id"], ndjson["id"]):
        api.wait_job(job_id)


def test_a_dry_run_of_a_100k_operation_file_answers_and_writes_nothing(
    service: Service, api: InProcessApi
) -> None:
    count = service.runtime.settings.max_operations
    lines = b"\n".join(
        orjson.dumps({"op": "upsert", "type": "acct", "id": f"big-{n}", "data": {"n": n}})
        for n in range(count)
    )
    before = _rows(service)
    started = time.perf_counter()
    response = api.post("/v1/bulk?dry_run=true", data=lines, headers=NDJSON)
    dry = time.perf_counter() - started
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["total"] == count and body["valid"] is True
    assert body["partitions"] == service.runtime.settings.partitions  # 100k keys touch all
    assert _rows(service) == before
    logger.warning("%s: dry run of %d operations: %.2f s", service.mode, count, dry)


def _guarded(tmp_path: Path) -> Iterator[Service]:
    """Embedded, with a pending cap of 3 and private callback targets refused."""
    return embedded_service(tmp_path, max_pending_operations=3, allow_private_callbacks=False)


def test_a_dry_run_checks_the_pending_cap_without_using_it_and_the_callback_url(
    tmp_path: Path,
) -> None:
    for service in _guarded(tmp_path):
        api = service.api()
        private = {"operations": [_upsert("c")], "callback_url": "http://127.0.0.1:9/hook"}
        assert_problem(
            api.post("/v1/bulk?dry_run=true", json=private), 422, "callback_url_forbidden"
        )
        with service.drains_paused():
            api.submit([_upsert("p1"), _upsert("p2")])
            for _ in range(3):  # dry runs take nothing from the cap
                assert _dry_run(api, [_upsert("p3")]).status_code == 200
            assert_problem(
                _dry_run(api, [_upsert("p3"), _upsert("p4")]), 429, "too_many_pending_operations"
            )
            assert api.post("/v1/bulk", json={"operations": [_upsert("p3")]}).status_code == 202
            assert_problem(_dry_run(api, [_upsert("p4")]), 429, "too_many_pending_operations")
