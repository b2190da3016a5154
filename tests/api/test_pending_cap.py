"""The pending-work cap on real submits, on both modes: refused past it with nothing
recorded, counted exactly once work is done, and never in the way of a replay."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from bulkapi.store.tables import jobs
from tests.api.conftest import assert_problem, drains_held, ids_in_distinct_partitions, partition
from tests.conftest import InProcessApi, Service, service_in

CAP = 4


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def capped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp(f"capped-{request.param}")
    yield from service_in(request.param, tmp, max_pending_operations=CAP)


def _upserts(ids: list[str]) -> list[dict[str, Any]]:
    return [{"op": "upsert", "type": "lead", "id": rid, "data": {"n": 1}} for rid in ids]


def _jobs_of(service: Service, api: InProcessApi) -> int:
    listed = api.get("/v1/jobs?limit=100").get_json()["items"]
    with service.runtime.engine.connect() as conn:
        stored = conn.execute(
            select(func.count()).select_from(jobs).where(jobs.c.id.in_([j["id"] for j in listed]))
        ).scalar_one()
    assert stored == len(listed)
    return len(listed)


def test_a_submit_past_the_cap_is_refused_until_done_work_makes_room(capped: Service) -> None:
    api = capped.api()
    first, second, third = ids_in_distinct_partitions(capped, api, "lead", 3)
    with drains_held(capped) as held:
        keyed = {"Idempotency-Key": "cap-first"}
        body = {"operations": _upserts([first, second, third])}
        accepted = api.post("/v1/bulk", json=body, headers=keyed)
        assert accepted.status_code == 202
        refused = api.post("/v1/bulk", json={"operations": _upserts(["x1", "x2"])})
        assert_problem(refused, 429, "too_many_pending_operations")
        assert _jobs_of(capped, api) == 1
        # A replay records nothing, so the cap does not stand in its way.
        replayed = api.post("/v1/bulk", json=body, headers=keyed)
        assert replayed.status_code == 202
        assert replayed.get_json()["id"] == accepted.get_json()["id"]
        assert replayed.headers["Idempotent-Replayed"] == "true"
        # One operation done: the open job's total (3) still says full, its counters (2) not.
        held.drain(partition(capped, api, "lead", first))
        admitted = api.post("/v1/bulk", json={"operations": _upserts(["x1", "x2"])})
        assert admitted.status_code == 202
        assert _jobs_of(capped, api) == 2
        assert_problem(
            api.post("/v1/bulk", json={"operations": _upserts(["x3"])}),
            429,
            "too_many_pending_operations",
        )
    assert api.wait_job(admitted.get_json()["id"])["counts"]["succeeded"] == 2
