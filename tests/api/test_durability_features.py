"""Idempotency keys, deadlines, poison writes and retention, on both modes."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from bulkapi.store.tables import jobs
from tests.conftest import InProcessApi, Service, embedded_service
from tests.support import wait_until

UPSERT = {"op": "upsert", "type": "lead", "id": "i1", "data": {"n": 1}}


def test_same_idempotency_key_and_body_replays_the_original_job(api: InProcessApi) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = api.post("/v1/bulk", json={"operations": [UPSERT]}, headers=headers)
    again = api.post("/v1/bulk", json={"operations": [UPSERT]}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    replay_token = again.get_json()["status_token"]
    job_id = first.get_json()["id"]
    as_token = api.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {replay_token}"})
    assert as_token.status_code == 200
    assert len(api.get("/v1/jobs").get_json()["items"]) == 1
    assert api.wait_job(job_id)["counts"]["succeeded"] == 1
    assert api.get("/v1/resources/lead/i1").get_json()["version"] == 1


def test_same_idempotency_key_with_another_body_is_refused(api: InProcessApi) -> None:
    headers = {"Idempotency-Key": "order-43"}
    assert api.post("/v1/bulk", json={"operations": [UPSERT]}, headers=headers).status_code == 202
    other = {**UPSERT, "data": {"n": 2}}
    reused = api.post("/v1/bulk", json={"operations": [other]}, headers=headers)
    assert reused.status_code == 422
    assert reused.get_json()["code"] == "idempotency_key_reused"
    assert len(api.get("/v1/jobs").get_json()["items"]) == 1


def test_an_idempotency_key_past_its_day_is_free_for_a_new_request(
    service: Service, api: InProcessApi
) -> None:
    headers = {"Idempotency-Key": "order-44"}
    first = api.post("/v1/bulk", json={"operations": [UPSERT]}, headers=headers).get_json()
    with service.runtime.engine.begin() as conn:  # the first request, 25 hours ago
        conn.execute(
            update(jobs)
            .where(jobs.c.id == first["id"])
            .values(created_at=datetime.now(UTC) - timedelta(hours=25))
        )
    other = {**UPSERT, "data": {"n": 2}}
    second = api.post("/v1/bulk", json={"operations": [other]}, headers=headers)
    assert second.status_code == 202
    assert "Idempotent-Replayed" not in second.headers
    assert second.get_json()["id"] != first["id"]
    again = api.post("/v1/bulk", json={"operations": [other]}, headers=headers)
    assert again.get_json()["id"] == second.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    with service.runtime.engine.connect() as conn:
        holders = conn.execute(select(jobs.c.id).where(jobs.c.idempotency_key == "order-44"))
        assert list(holders.scalars()) == [second.get_json()["id"]]
        assert (
            conn.execute(select(jobs.c.idempotency_key).where(jobs.c.id == first["id"])).scalar()
            is None
        )


def test_idempotency_keys_are_per_tenant(service: Service, api: InProcessApi) -> None:
    other = service.api()
    headers = {"Idempotency-Key": "shared-key"}
    mine = api.post("/v1/bulk", json={"operations": [UPSERT]}, headers=headers).get_json()
    theirs = other.post("/v1/bulk", json={"operations": [UPSERT]}, headers=headers).get_json()
    assert mine["id"] != theirs["id"]


def test_concurrent_duplicates_with_one_idempotency_key_create_one_job(
    service: Service, api: InProcessApi
) -> None:
    operations = [{"op": "upsert", "type": "lead", "id": f"c{i}", "data": {}} for i in range(300)]
    answers: list[tuple[int, dict[str, object]]] = []
    retry_afters: list[str | None] = []
    lock = threading.Lock()

    def submit() -> None:
        client = InProcessApi(service.app.test_client(), api.key)
        response = client.post(
            "/v1/bulk", json={"operations": operations}, headers={"Idempotency-Key": "race"}
        )
        with lock:
            answers.append((response.status_code, response.get_json()))
            retry_afters.append(response.headers.get("Retry-After"))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = {status for status, _ in answers}
    assert statuses <= {202, 409}
    job_ids = {body["id"] for status, body in answers if status == 202}
    assert len(job_ids) == 1
    assert all(body["code"] == "idempotency_key_in_use" for s, body in answers if s == 409)
    # An answer to an in-flight duplicate says when to retry (a 202 says when to poll).
    assert all(value is not None and int(value) >= 1 for value in retry_afters)
    assert len(api.get("/v1/jobs").get_json()["items"]) == 1


def test_operations_not_applied_by_the_deadline_are_cancelled(
    service: Service, api: InProcessApi
) -> None:
    with service.drains_paused():
        job = api.submit([UPSERT], deadline=2)
        deadline = datetime.fromisoformat(job["deadline"])
        wait_until(lambda: datetime.now(UTC) > deadline + timedelta(seconds=0.5), what="deadline")
        assert api.get(f"/v1/jobs/{job['id']}").get_json()["status"] == "queued"
    final = api.wait_job(job["id"])
    assert final["status"] == "cancelled"
    assert final["counts"]["cancelled"] == 1
    [result] = api.results(job["id"])
    assert result["status"] == "cancelled"
    assert result["error"]["code"] == "deadline_exceeded"
    assert api.get("/v1/resources/lead/i1").status_code == 404


def test_a_deadline_in_seconds_far_enough_lets_the_job_finish(api: InProcessApi) -> None:
    job = api.submit([UPSERT], deadline=600)
    assert api.wait_job(job["id"])["status"] == "succeeded"


def test_a_past_or_malformed_deadline_is_refused(api: InProcessApi) -> None:
    for deadline in ("2001-01-01T00:00:00Z", "tomorrow", -5, True):
        response = api.post("/v1/bulk", json={"operations": [UPSERT], "deadline": deadline})
        assert response.status_code == 422, deadline
        assert "deadline" in response.get_json()["errors"]
    assert api.get("/v1/jobs").get_json()["items"] == []


def test_a_poison_write_fails_alone_and_the_job_goes_on(api: InProcessApi) -> None:
    job = api.submit(
        [
            {"op": "upsert", "type": "guarded", "id": "g1", "data": {"ok": 1}},
            {"op": "upsert", "type": "guarded", "id": "g2", "data": {"poison": True}},
            {"op": "upsert", "type": "guarded", "id": "g3", "data": {"reject": True}},
            {"op": "upsert", "type": "lead", "id": "l9", "data": {"ok": 1}},
        ]
    )
    final = api.wait_job(job["id"])
    assert final["status"] == "partially_succeeded"
    assert final["counts"] == {"pending": 0, "succeeded": 2, "failed": 2, "cancelled": 0}
    results = api.results(job["id"])
    assert results[1]["error"]["code"] == "apply_failed"
    assert "PoisonError" in results[1]["error"]["message"]
    assert results[2]["error"]["code"] == "rule_rejected"
    assert api.get("/v1/resources/guarded/g2").status_code == 404
    assert api.get("/v1/resources/guarded/g1").status_code == 200


def test_writes_after_a_poison_write_on_the_same_key_still_apply_in_order(
    api: InProcessApi,
) -> None:
    first = api.submit([{"op": "upsert", "type": "guarded", "id": "p", "data": {"poison": True}}])
    second = api.submit([{"op": "upsert", "type": "guarded", "id": "p", "data": {"n": 2}}])
    assert api.wait_job(first["id"])["status"] == "failed"
    assert api.wait_job(second["id"])["status"] == "succeeded"
    assert api.results(second["id"])[0]["version"] == 1


def test_sync_writes_run_the_rules_too(api: InProcessApi) -> None:
    rejected = api.put("/v1/resources/guarded/s1", json={"reject": True})
    assert rejected.status_code == 422
    assert rejected.get_json()["code"] == "rule_rejected"
    crashed = api.put("/v1/resources/guarded/s1", json={"poison": True})
    assert crashed.status_code == 503
    assert crashed.get_json()["code"] == "apply_failed"
    assert api.get("/v1/resources/guarded/s1").status_code == 404


def test_documents_with_nul_characters_or_deep_nesting_are_refused_at_admission(
    api: InProcessApi,
) -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    response = api.post(
        "/v1/bulk",
        json={
            "operations": [
                {"op": "upsert", "type": "lead", "id": "n1", "data": {"s": "a\u0000b"}},
                {"op": "upsert", "type": "lead", "id": "n2", "data": deep},
            ]
        },
    )
    assert response.status_code == 422
    assert set(response.get_json()["errors"]) == {"0", "1"}
    assert api.put("/v1/resources/lead/n1", json={"s": "a\u0000b"}).status_code == 422


def test_finished_jobs_are_purged_after_retention_and_resources_stay(tmp_path: Path) -> None:
    with contextmanager(embedded_service)(tmp_path, retention_seconds=1) as service:
        api = service.api()
        job = api.submit([UPSERT])
        assert api.wait_job(job["id"])["status"] == "succeeded"
        wait_until(
            lambda: api.get(f"/v1/jobs/{job['id']}").status_code == 404,
            what="the sweeper to purge the finished job",
        )
        assert api.get(f"/v1/jobs/{job['id']}/results").status_code == 404
        assert api.get("/v1/resources/lead/i1").get_json()["version"] == 1
