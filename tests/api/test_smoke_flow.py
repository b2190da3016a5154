"""A realistic end-to-end flow through the API, on both modes."""

from __future__ import annotations

from tests.conftest import InProcessApi


def test_bulk_job_applies_in_order_and_reports_every_result(api: InProcessApi) -> None:
    assert api.put("/v1/resources/lead/l1", json={"score": 1}).status_code == 201
    job = api.submit(
        [
            {"op": "upsert", "type": "lead", "id": "l1", "data": {"score": 2}},
            {"op": "patch", "type": "lead", "id": "l2", "data": {"score": 3}},
            {"op": "upsert", "type": "lead", "id": "l3", "data": {"score": 4}},
        ]
    )
    final = api.wait_job(job["id"])
    assert final["status"] == "partially_succeeded"
    assert final["counts"] == {"pending": 0, "succeeded": 2, "failed": 1, "cancelled": 0}
    results = api.results(job["id"])
    assert [r["status"] for r in results] == ["succeeded", "failed", "succeeded"]
    assert results[0]["version"] == 2
    assert results[1]["error"]["code"] == "not_found"
    lead = api.get("/v1/resources/lead/l1")
    assert lead.headers["ETag"] == '"2"'
    assert lead.get_json()["data"] == {"score": 2}


def test_sync_write_behind_pending_bulk_work_is_busy_until_applied(service, api) -> None:
    with service.drains_paused():
        job = api.submit([{"op": "upsert", "type": "org", "id": "o1", "data": {"n": 1}}])
        busy = api.put("/v1/resources/org/o1", json={"n": 2})
        assert busy.status_code == 409
        assert busy.get_json()["code"] == "resource_busy"
        assert busy.get_json()["job_id"] == job["id"]
        assert busy.headers["Retry-After"]
    waited = api.put("/v1/resources/org/o1", json={"n": 2}, headers={"Prefer": "wait=30"})
    assert waited.status_code == 200
    assert waited.get_json()["version"] == 2
