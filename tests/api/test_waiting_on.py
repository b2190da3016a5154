"""``waiting_on`` of a job on both modes: the tenant's jobs it waits behind, and no other."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import drains_held, ids_in_distinct_partitions, partition
from tests.conftest import InProcessApi, Service


def _upsert(rid: str) -> dict[str, Any]:
    return {"op": "upsert", "type": "acct", "id": rid, "data": {"rid": rid}}


def _waiting_on(api: InProcessApi, job_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.get_json()
    found: list[dict[str, Any]] = response.get_json()["waiting_on"]
    return found


def test_waiting_on_names_the_jobs_holding_earlier_work_while_they_do(
    service: Service, api: InProcessApi
) -> None:
    shared, second = ids_in_distinct_partitions(service, api, "acct", 2)
    stranger = service.api()
    with drains_held(service) as drains:
        # Another tenant's earlier work on a resource of the same type and id: not ours.
        theirs = stranger.submit([_upsert(shared)])
        blocking = api.submit([_upsert(shared)])
        waiting = api.submit([_upsert(shared), _upsert(second)])
        third = api.submit([_upsert(second), _upsert(shared), _upsert("alone")])
        assert _waiting_on(stranger, theirs["id"]) == []
        assert _waiting_on(api, blocking["id"]) == []
        assert _waiting_on(api, waiting["id"]) == [{"job_id": blocking["id"], "operations": 1}]
        assert _waiting_on(api, third["id"]) == [  # oldest first
            {"job_id": blocking["id"], "operations": 1},
            {"job_id": waiting["id"], "operations": 2},
        ]
        # Reading with the job's status token shows the same.
        by_token = InProcessApi(api.client, third["status_token"])
        assert len(_waiting_on(by_token, third["id"])) == 2
        # Lists leave it out for open jobs (a query per job); the submit's 202 too.
        assert "waiting_on" not in waiting
        assert all("waiting_on" not in job for job in api.get("/v1/jobs").get_json()["items"])

        drains.drain(partition(service, api, "acct", shared))
        assert api.get(f"/v1/jobs/{blocking['id']}").get_json()["status"] == "succeeded"
        assert _waiting_on(api, blocking["id"]) == []
        assert _waiting_on(api, waiting["id"]) == []  # its other operation is first in line
        assert _waiting_on(api, third["id"]) == [{"job_id": waiting["id"], "operations": 1}]
    for job in (waiting, third):
        finished = api.wait_job(job["id"])
        assert finished["status"] == "succeeded" and finished["waiting_on"] == []
    stranger.wait_job(theirs["id"])
