"""Resource types (issue 5): schemas at the door, rules at apply time, ordered side effects.

Every test runs on both modes: the ``crm`` service with BULKAPI_TYPES=examples.crm (the
example module as shipped), the ``service`` with the suite's own types (``recorded``,
whose effect logs every attempt, and ``window``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from bulkapi.api.app import create_app
from bulkapi.runtime import Runtime
from bulkapi.store.tables import operations as operations_table
from tests.api.conftest import assert_problem, partition, tenant_of
from tests.conftest import InProcessApi, Service, embedded_service, production_service
from tests.support import WAIT_SECONDS
from tests.types_for_tests import EFFECT_LOG, FRAGILE_N


def _lead(rid: str, **data: Any) -> dict[str, Any]:
    return {"op": "upsert", "type": "lead", "id": rid, "data": data}


def _recorded(rid: str, op: str = "upsert", **data: Any) -> dict[str, Any]:
    return {"op": op, "type": "recorded", "id": rid, "data": data}


def _effects(api: InProcessApi, rtype: str, rid: str) -> list[dict[str, Any]]:
    response = api.get(f"/v1/resources/{rtype}/{rid}/effects?limit=1000")
    assert response.status_code == 200, response.get_json()
    items: list[dict[str, Any]] = response.get_json()["items"]
    return items


def _settled_effects(
    api: InProcessApi, rtype: str, rid: str, expected: int
) -> list[dict[str, Any]]:
    """The resource's effects once ``expected`` of them exist and none is pending."""
    deadline = time.monotonic() + WAIT_SECONDS * 4
    while True:
        effects = _effects(api, rtype, rid)
        if len(effects) >= expected and all(e["status"] != "pending" for e in effects):
            return effects
        if time.monotonic() > deadline:
            raise AssertionError(f"effects of {rtype}/{rid} did not settle: {effects}")
        time.sleep(0.1)


def _settled_results(api: InProcessApi, job_id: str) -> list[dict[str, Any]]:
    """The job's results once it is terminal and no operation's effects are pending."""
    api.wait_job(job_id)
    deadline = time.monotonic() + WAIT_SECONDS * 4
    while True:
        results = api.results(job_id)
        if all(result.get("effects_status") != "pending" for result in results):
            return results
        if time.monotonic() > deadline:
            raise AssertionError(f"effects of {job_id} did not settle: {results}")
        time.sleep(0.1)


def _logged(tenant_id: str) -> list[dict[str, Any]]:
    """Every effect attempt the ``record`` handler logged for this tenant, in log order."""
    path = os.environ[EFFECT_LOG]
    if not os.path.exists(path):
        return []
    with open(path, "rb") as log:
        lines = [orjson.loads(line) for line in log if line.strip()]
    return [line for line in lines if line["tenant_id"] == tenant_id]


CRM = "examples.crm"


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def crm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp(f"crm-{request.param}")
    if request.param == "embedded":
        yield from embedded_service(tmp, types_module=CRM)
    else:
        yield from production_service(tmp, types_module=CRM)


@pytest.fixture
def crm_api(crm: Service) -> InProcessApi:
    return crm.api()


# --- schemas at the door -------------------------------------------------------------


def test_a_sync_put_with_a_bad_field_is_a_422_naming_it_and_stores_nothing(
    crm_api: InProcessApi,
) -> None:
    api = crm_api
    body = assert_problem(
        api.put("/v1/resources/lead/l-1", json={"score": "abc"}), 422, "validation_error"
    )
    assert set(body["errors"]) == {"score"}
    assert api.get("/v1/resources/lead/l-1").status_code == 404


def test_a_sync_put_missing_a_required_field_names_it(crm_api: InProcessApi) -> None:
    api = crm_api
    body = assert_problem(
        api.put("/v1/resources/lead/l-2", json={"status": "new"}), 422, "validation_error"
    )
    assert set(body["errors"]) == {"score"}


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"score": -1}, "score"),
        ({"score": 1, "status": "won"}, "status"),
        ({"score": 1, "colour": "red"}, "colour"),
        ({"score": 1.5}, "score"),
        ({"score": True}, "score"),
    ],
)
def test_sync_put_checks_every_schema_constraint(
    crm_api: InProcessApi, document: dict[str, Any], field: str
) -> None:
    api = crm_api
    body = assert_problem(api.put("/v1/resources/lead/l-3", json=document), 422, "validation_error")
    assert field in body["errors"], body


def test_a_valid_lead_is_stored_as_sent(crm_api: InProcessApi) -> None:
    api = crm_api
    response = api.put("/v1/resources/lead/l-4", json={"score": 0, "status": "new"})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["data"] == {"score": 0, "status": "new"}


def test_a_sync_patch_is_checked_as_a_patch(crm_api: InProcessApi) -> None:
    api = crm_api
    assert api.put("/v1/resources/lead/l-5", json={"score": 3}).status_code == 201
    # Its own values are checked ...
    body = assert_problem(
        api.patch("/v1/resources/lead/l-5", json={"score": "x"}), 422, "validation_error"
    )
    assert set(body["errors"]) == {"score"}
    # ... a required field cannot be removed, an optional one can ...
    body = assert_problem(
        api.patch("/v1/resources/lead/l-5", json={"score": None}), 422, "validation_error"
    )
    assert set(body["errors"]) == {"score"}
    assert api.patch("/v1/resources/lead/l-5", json={"status": "contacted"}).status_code == 200
    removed = api.patch("/v1/resources/lead/l-5", json={"status": None})
    assert removed.status_code == 200, removed.get_json()
    assert removed.get_json()["data"] == {"score": 3}


def test_a_sync_patch_is_checked_as_the_merged_document(api: InProcessApi) -> None:
    """A cross-field check that only the whole patched document can fail."""
    assert api.put("/v1/resources/window/w-1", json={"start": 5, "end": 9}).status_code == 201
    body = assert_problem(
        api.patch("/v1/resources/window/w-1", json={"end": 1}), 422, "validation_error"
    )
    assert "end" in body["errors"], body
    current = api.get("/v1/resources/window/w-1").get_json()
    assert (current["version"], current["data"]) == (1, {"start": 5, "end": 9})


def test_one_bad_lead_among_a_thousand_is_a_422_at_its_index_only_and_nothing_is_queued(
    crm: Service, crm_api: InProcessApi
) -> None:
    api = crm_api
    operations = [_lead(f"bulk-{i}", score=i, status="new") for i in range(1000)]
    operations[637] = _lead("bulk-637", score="abc", status="new")
    body = assert_problem(
        api.post("/v1/bulk", json={"operations": operations}), 422, "validation_error"
    )
    assert body["errors"] == {"637": {"data": {"score": ["Not a valid integer."]}}}
    assert api.get("/v1/jobs").get_json()["items"] == []
    assert api.get("/v1/resources/lead").get_json()["items"] == []
    with crm.runtime.engine.connect() as conn:
        queued = conn.execute(
            select(func.count())
            .select_from(operations_table)
            .where(operations_table.c.tenant_id == tenant_of(crm, crm_api))
        ).scalar()
    assert queued == 0


def test_bulk_patches_are_checked_at_admission_with_every_bad_index_named(
    crm_api: InProcessApi,
) -> None:
    api = crm_api
    operations = [
        {"op": "patch", "type": "lead", "id": "p-0", "data": {"status": "contacted"}},
        {"op": "patch", "type": "lead", "id": "p-1", "data": {"score": None}},
        {"op": "patch", "type": "lead", "id": "p-2", "data": {"status": "maybe"}},
        {"op": "delete", "type": "lead", "id": "p-3"},
        {"op": "upsert", "type": "untyped", "id": "p-4", "data": {"score": "anything"}},
    ]
    body = assert_problem(
        api.post("/v1/bulk", json={"operations": operations}), 422, "validation_error"
    )
    assert set(body["errors"]) == {"1", "2"}
    assert set(body["errors"]["1"]["data"]) == {"score"}
    assert set(body["errors"]["2"]["data"]) == {"status"}


# --- rules and merged patches at apply time ------------------------------------------


def test_a_rule_rejection_fails_only_its_operation_with_code_and_message(
    crm_api: InProcessApi,
) -> None:
    api = crm_api
    setup = api.submit([_lead("r-1", score=5, status="qualified")])
    assert api.wait_job(setup["id"])["status"] == "succeeded"
    job = api.submit(
        [
            {"op": "patch", "type": "lead", "id": "r-1", "data": {"status": "new"}},
            _lead("r-3", score=1),
        ]
    )
    assert api.wait_job(job["id"])["status"] == "partially_succeeded"
    rejected, fine = api.results(job["id"])
    assert rejected["status"] == "failed"
    assert rejected["error"]["code"] == "rule_rejected"
    assert "cannot go back to new" in rejected["error"]["message"]
    assert "effects_status" not in rejected
    assert fine["status"] == "succeeded"
    assert api.get("/v1/resources/lead/r-1").get_json()["data"]["status"] == "qualified"


def test_a_bulk_patch_whose_merged_document_is_invalid_fails_alone(api: InProcessApi) -> None:
    window = {"op": "upsert", "type": "window", "id": "r-2", "data": {"start": 1, "end": 4}}
    assert api.wait_job(api.submit([window])["id"])["status"] == "succeeded"
    job = api.submit([{"op": "patch", "type": "window", "id": "r-2", "data": {"start": 10}}])
    assert api.wait_job(job["id"])["status"] == "failed"
    (merged,) = api.results(job["id"])
    assert merged["error"]["code"] == "rule_rejected"
    assert "end" in merged["error"]["message"]
    assert api.get("/v1/resources/window/r-2").get_json()["data"] == {"start": 1, "end": 4}


def test_a_crashing_schema_is_a_503_apply_failed_and_records_nothing(
    service: Service, api: InProcessApi
) -> None:
    """Operator code that crashes while validating is not the client's fault: 503, never
    a 500, and neither the sync write nor the bulk request leaves anything behind."""
    crashed = api.put("/v1/resources/fragile/f-1", json={"n": FRAGILE_N})
    assert_problem(crashed, 503, "apply_failed")
    assert int(crashed.headers["Retry-After"]) >= 1
    assert api.get("/v1/resources/fragile/f-1").status_code == 404
    fine = {"op": "upsert", "type": "fragile", "id": "f-2", "data": {"n": 1}}
    crashing = {"op": "upsert", "type": "fragile", "id": "f-3", "data": {"n": FRAGILE_N}}
    assert_problem(api.post("/v1/bulk", json={"operations": [fine, crashing]}), 503, "apply_failed")
    assert api.get("/v1/jobs").get_json()["items"] == []
    assert api.get("/v1/resources/fragile").get_json()["items"] == []
    assert api.put("/v1/resources/fragile/f-1", json={"n": 1}).status_code == 201


# --- side effects ----------------------------------------------------------------------


def test_effects_run_after_commit_with_the_change_and_its_operation_id(
    service: Service, api: InProcessApi
) -> None:
    job = api.submit([_recorded("e-1", n=1), _recorded("e-2", n=2)])
    results = _settled_results(api, job["id"])
    assert [r["effects_status"] for r in results] == ["succeeded", "succeeded"]
    for index, result in enumerate(results):
        (effect,) = result["effects"]
        assert effect["name"] == "record"
        assert effect["attempts"] == 1
        assert effect["operation_id"] == f"{job['id']}.{index}"
        assert effect["version"] == result["version"] == 1
    logged = {line["id"]: line for line in _logged(tenant_of(service, api))}
    assert logged["e-1"]["after"] == {"n": 1}
    assert logged["e-1"]["before"] is None
    assert logged["e-1"]["idempotency_key"] == f"{job['id']}.0"
    assert logged["e-1"]["job_id"] == job["id"]
    if service.mode == "postgres":  # run by the worker processes, not the API process
        assert logged["e-1"]["pid"] != os.getpid()


def test_a_sync_write_records_its_effect_with_a_write_id(
    service: Service, api: InProcessApi
) -> None:
    assert api.put("/v1/resources/recorded/s-1", json={"n": 1}).status_code == 201
    assert api.delete("/v1/resources/recorded/s-1").status_code == 204
    newest, oldest = _settled_effects(api, "recorded", "s-1", expected=2)
    assert (newest["version"], oldest["version"]) == (2, 1)
    assert newest["job_id"] is None
    assert newest["operation_id"].startswith("wr_")
    assert newest["operation_id"] != oldest["operation_id"]
    logged = [line for line in _logged(tenant_of(service, api)) if line["id"] == "s-1"]
    assert [(line["op"], line["after"]) for line in logged] == [
        ("upsert", {"n": 1}),
        ("delete", None),
    ]


def test_a_failing_effect_is_retried_shows_failed_and_never_undoes_the_write(
    service: Service, api: InProcessApi
) -> None:
    job = api.submit([_recorded("f-1", effect_fails="always"), _recorded("f-2", effect_fails=1)])
    assert api.wait_job(job["id"])["status"] == "succeeded"
    always, once = _settled_results(api, job["id"])
    attempts = service.runtime.settings.effect_attempts
    assert always["status"] == "succeeded"
    assert always["effects_status"] == "failed"
    assert always["effects"][0]["attempts"] == attempts
    assert f"refused attempt {attempts}" in always["effects"][0]["last_error"]
    assert once["effects_status"] == "succeeded"
    assert once["effects"][0]["attempts"] == 2
    assert "refused attempt 1" in once["effects"][0]["last_error"]
    assert api.get("/v1/resources/recorded/f-1").get_json()["version"] == 1
    logged = [line["attempt"] for line in _logged(tenant_of(service, api)) if line["id"] == "f-1"]
    assert logged == list(range(1, attempts + 1))


def test_results_filter_by_effects_status_finds_the_failures(api: InProcessApi) -> None:
    job = api.submit(
        [
            _recorded("q-0", n=0),
            _recorded("q-1", effect_fails="always"),
            {"op": "upsert", "type": "window", "id": "q-2", "data": {"start": 0, "end": 1}},
            _recorded("q-3", effect_fails="always"),
        ]
    )
    _settled_results(api, job["id"])

    def indexes(query: str, **headers: str) -> list[int]:
        response = api.get(f"/v1/jobs/{job['id']}/results?{query}", headers=headers)
        assert response.status_code == 200, response.get_json()
        if response.mimetype == "application/x-ndjson":
            return [orjson.loads(line)["index"] for line in response.data.splitlines()]
        return [item["index"] for item in response.get_json()["items"]]

    assert indexes("effects_status=failed") == [1, 3]
    assert indexes("effects_status=failed&limit=1") == [1]
    assert indexes("effects_status=failed", Accept="application/x-ndjson") == [1, 3]
    assert indexes("effects_status=succeeded") == [0]
    assert indexes("effects_status=pending") == []
    assert indexes("effects_status=failed&status=failed") == []  # the writes succeeded
    assert_problem(
        api.get(f"/v1/jobs/{job['id']}/results?effects_status=broken"), 422, "validation_error"
    )


def _neighbour(service: Service, api: InProcessApi, rid: str) -> str:
    """Another ``recorded`` id in the same partition as ``rid`` (one runner serves both)."""
    home = partition(service, api, "recorded", rid)
    return next(
        f"{rid}-n{i}"
        for i in range(10_000)
        if partition(service, api, "recorded", f"{rid}-n{i}") == home
    )


def test_a_failing_effect_holds_back_later_effects_of_its_resource_only(
    service: Service, api: InProcessApi
) -> None:
    neighbour = _neighbour(service, api, "h-1")
    first = api.submit([_recorded("h-1", effect_fails=2), _recorded(neighbour, n=1)])
    second = api.submit([_recorded("h-1", op="patch", effect_fails=0, n=2)])
    api.wait_job(first["id"])
    api.wait_job(second["id"])
    _settled_results(api, second["id"])
    _settled_results(api, first["id"])
    logged = [
        (line["id"], line["version"], line["attempt"]) for line in _logged(tenant_of(service, api))
    ]
    held = [entry for entry in logged if entry[0] == "h-1"]
    assert held == [("h-1", 1, 1), ("h-1", 1, 2), ("h-1", 1, 3), ("h-1", 2, 1)]
    # Its neighbour in the same partition did not wait for h-1's retries.
    assert logged.index((neighbour, 1, 1)) < logged.index(("h-1", 1, 2))


def test_effects_of_each_resource_run_in_admission_order_across_workers(
    service: Service, api: InProcessApi
) -> None:
    """Bulk jobs and sync writes interleave on shared keys; some effects fail and retry.
    Every key's effects must run in exactly its version order: 1, 2, ..., n."""
    keys = [f"o-{i}" for i in range(12)]
    jobs = []
    for round_number in range(6):
        operations = [
            _recorded(rid, n=round_number, effect_fails=1 if (i + round_number) % 5 == 0 else 0)
            for i, rid in enumerate(keys)
        ]
        jobs.append(api.submit(operations)["id"])
        for rid in keys[round_number % 3 :: 3]:
            response = api.patch(
                f"/v1/resources/recorded/{rid}",
                json={"sync": round_number},
                headers={"Prefer": "wait=30"},
            )
            assert response.status_code == 200, response.get_json()
    for job_id in jobs:
        assert api.wait_job(job_id)["status"] == "succeeded"
    versions = {rid: api.get(f"/v1/resources/recorded/{rid}").get_json()["version"] for rid in keys}
    for rid in keys:
        _settled_effects(api, "recorded", rid, expected=versions[rid])

    runs: dict[str, list[int]] = defaultdict(list)
    keys_by_version: dict[tuple[str, int], set[str]] = defaultdict(set)
    for line in _logged(tenant_of(service, api)):
        runs[line["id"]].append(line["version"])
        keys_by_version[line["id"], line["version"]].add(line["idempotency_key"])
    for rid in keys:
        assert runs[rid] == sorted(runs[rid]), (rid, runs[rid])
        assert sorted(set(runs[rid])) == list(range(1, versions[rid] + 1)), (rid, runs[rid])
    assert sum(map(len, runs.values())) > sum(versions.values())  # and retries happened
    # One idempotency key per change, whatever the number of attempts.
    assert all(len(found) == 1 for found in keys_by_version.values())


def test_org_turning_custom_sso_off_runs_the_unlink_effect_once_per_switch(
    crm_api: InProcessApi,
) -> None:
    api = crm_api
    assert (
        api.put(
            "/v1/resources/org/acme", json={"name": "Acme", "allow_custom_sso": True}
        ).status_code
        == 201
    )
    job = api.submit(
        [{"op": "patch", "type": "org", "id": "acme", "data": {"allow_custom_sso": False}}]
    )
    (result,) = _settled_results(api, job["id"])
    assert result["effects_status"] == "succeeded"
    assert [effect["name"] for effect in result["effects"]] == ["unlink_sso"]
    # Already off, a rename, or created off: no switch, no effect.
    assert api.patch("/v1/resources/org/acme", json={"name": "Acme Inc"}).status_code == 200
    assert (
        api.put(
            "/v1/resources/org/beta", json={"name": "Beta", "allow_custom_sso": False}
        ).status_code
        == 201
    )
    effects = _effects(api, "org", "acme")
    assert [(effect["name"], effect["version"]) for effect in effects] == [("unlink_sso", 2)]
    assert _effects(api, "org", "beta") == []


def test_resource_effects_page_newest_first(api: InProcessApi) -> None:
    for n in range(5):
        assert api.put("/v1/resources/recorded/pg-1", json={"n": n}).status_code in (200, 201)
    _settled_effects(api, "recorded", "pg-1", expected=5)
    seen: list[int] = []
    cursor = None
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        page = api.get(f"/v1/resources/recorded/pg-1/effects{query}").get_json()
        seen.extend(effect["version"] for effect in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]
    assert_problem(
        api.get("/v1/resources/recorded/pg-1/effects?cursor=bm9wZQ"), 422, "validation_error"
    )


# --- GET /v1/types ---------------------------------------------------------------------


def test_types_list_the_registered_types_with_json_schema(
    crm: Service, crm_api: InProcessApi
) -> None:
    api = crm_api
    body = api.get("/v1/types").get_json()
    by_name = {item["name"]: item for item in body["items"]}
    assert set(by_name) == {"lead", "org"}
    assert body["strict"] is False
    lead = by_name["lead"]["schema"]
    assert lead["type"] == "object"
    assert lead["required"] == ["score"]
    assert lead["properties"]["score"] == {"type": "integer", "minimum": 0}
    assert lead["properties"]["status"]["enum"] == ["new", "contacted", "qualified", "lost"]
    assert by_name["org"]["effects"] == ["unlink_sso"]
    assert by_name["org"]["schema"]["properties"]["allow_custom_sso"] == {"type": "boolean"}
    assert api.get("/v1/types/lead").get_json() == by_name["lead"]
    assert_problem(api.get("/v1/types/nope"), 404, "not_found")
    assert_problem(crm.anonymous().get("/v1/types"), 401, "unauthorized")


def test_a_type_without_schema_is_listed_as_free_form(api: InProcessApi) -> None:
    recorded = api.get("/v1/types/recorded").get_json()
    assert recorded == {
        "name": "recorded",
        "description": "",
        "schema": None,
        "effects": ["record"],
    }
    window = api.get("/v1/types/window").get_json()["schema"]
    assert sorted(window["required"]) == ["end", "start"]


# --- strict mode -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(crm: Service) -> Iterator[Service]:
    """The crm deployment with BULKAPI_STRICT_TYPES=1 (checked in the API process)."""
    runtime = Runtime(dataclasses.replace(crm.runtime.settings, strict_types=True))
    try:
        yield Service(crm.mode, runtime, create_app(runtime), crm.workers)
    finally:
        runtime.stop()


def test_strict_mode_refuses_unregistered_types_and_records_nothing(strict: Service) -> None:
    api = strict.api()
    assert api.get("/v1/types").get_json()["strict"] is True
    body = assert_problem(api.put("/v1/resources/gadget/g-1", json={"a": 1}), 422, "unknown_type")
    assert "type" in body["errors"]
    assert_problem(api.delete("/v1/resources/gadget/g-1"), 422, "unknown_type")
    operations = [_lead("k-0", score=1), {"op": "upsert", "type": "gadget", "id": "g", "data": {}}]
    body = assert_problem(
        api.post("/v1/bulk", json={"operations": operations}), 422, "unknown_type"
    )
    assert set(body["errors"]) == {"1"}
    assert api.get("/v1/jobs").get_json()["items"] == []
    assert api.put("/v1/resources/lead/k-1", json={"score": 1}).status_code == 201
    accepted = api.post("/v1/bulk", json={"operations": [_lead("k-2", score=2)]})
    assert accepted.status_code == 202, accepted.get_json()
