"""Ordered side effects: run after commit, in each resource's write order, at
least once, retried, their failures visible per operation; on both modes.

The suite's ``recorded`` type logs every attempt of its effect to a file shared by every
process, so tests can check which change ran when, and how often.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any

import orjson

from tests.api.conftest import assert_problem, partition, tenant_of
from tests.conftest import InProcessApi, Service
from tests.support import WAIT_SECONDS
from tests.types_for_tests import EFFECT_LOG


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
