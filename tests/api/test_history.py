"""Per-resource history on both modes: every version, which write made it, its effects."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import assert_problem
from tests.conftest import InProcessApi, Service, service_in


def _history(api: InProcessApi, rtype: str, rid: str, limit: int = 7) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = api.get(f"/v1/resources/{rtype}/{rid}/history{query}")
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_history_shows_every_version_of_bulk_and_sync_writes_after_a_concurrent_workload(
    service: Service, api: InProcessApi
) -> None:
    accepted: list[tuple[int, Any]] = []  # (version, source) of every accepted write
    guard = threading.Lock()

    def sync_writer(n: int) -> None:
        for i in range(6):
            answer = api.put(
                "/v1/resources/acct/h", json={"w": n, "i": i}, headers={"Prefer": "wait=30"}
            )
            if answer.status_code in (200, 201):
                with guard:
                    accepted.append((int(answer.headers["ETag"].strip('"')), "sync"))

    jobs: list[str] = []

    def bulk_writer() -> None:
        for i in range(6):
            job = api.submit([{"op": "upsert", "type": "acct", "id": "h", "data": {"b": i}}])
            jobs.append(job["id"])

    threads = [threading.Thread(target=sync_writer, args=(n,)) for n in range(2)]
    threads.append(threading.Thread(target=bulk_writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for job_id in jobs:
        assert api.wait_job(job_id)["status"] == "succeeded"
        (result,) = api.results(job_id)
        accepted.append((result["version"], {"job_id": job_id, "index": 0}))

    history = _history(api, "acct", "h", limit=5)
    versions = [entry["version"] for entry in history]
    assert versions == list(range(len(accepted), 0, -1))  # newest first, no gap
    assert sorted(accepted, key=lambda pair: -pair[0]) == [
        (entry["version"], entry["source"]) for entry in history
    ]
    assert all(entry["op"] == "upsert" and entry["effects"] == [] for entry in history)
    times = [datetime.fromisoformat(entry["applied_at"]) for entry in history]
    assert times == sorted(times, reverse=True)


def test_history_names_the_operation_and_the_effects_each_version_triggered(
    api: InProcessApi,
) -> None:
    api.put("/v1/resources/recorded/r1", json={"n": 1})
    job = api.submit(
        [
            {"op": "patch", "type": "recorded", "id": "r1", "data": {"n": 2}},
            {"op": "upsert", "type": "recorded", "id": "other", "data": {"n": 0}},
        ]
    )
    api.wait_job(job["id"])
    assert api.delete("/v1/resources/recorded/r1").status_code == 204
    history = _history(api, "recorded", "r1")
    assert [(e["version"], e["op"]) for e in history] == [
        (3, "delete"),
        (2, "patch"),
        (1, "upsert"),
    ]
    assert history[1]["source"] == {"job_id": job["id"], "index": 0}
    assert history[0]["source"] == history[2]["source"] == "sync"
    for entry in history:
        assert [(effect["name"], effect["version"]) for effect in entry["effects"]] == [
            ("record", entry["version"])
        ]
    # A deleted resource keeps its history (its tombstone keeps its versions).
    assert api.get("/v1/resources/recorded/r1").status_code == 404


def test_history_of_a_resource_never_written_or_of_another_tenant_is_not_found(
    service: Service, api: InProcessApi
) -> None:
    assert_problem(api.get("/v1/resources/acct/never/history"), 404, "not_found")
    api.put("/v1/resources/acct/mine", json={"n": 1})
    assert_problem(service.api().get("/v1/resources/acct/mine/history"), 404, "not_found")
    assert_problem(api.get("/v1/resources/acct/mine/history?cursor=bogus"), 422, "validation_error")


@pytest.mark.parametrize("mode", ["embedded", "postgres"])
def test_only_the_newest_versions_are_kept(mode: str, tmp_path: Path) -> None:
    for service in service_in(mode, tmp_path, history_versions=3):
        api = service.api()
        for n in range(5):
            api.put("/v1/resources/acct/k", json={"n": n})
        assert [e["version"] for e in _history(api, "acct", "k")] == [5, 4, 3]
        # Four bulk versions of the key, applied in one batch: more than are kept.
        with service.drains_paused():
            jobs = [
                api.submit([{"op": "upsert", "type": "acct", "id": "k", "data": {"n": n}}])
                for n in range(5, 9)
            ]
        for job in jobs:
            api.wait_job(job["id"])
        assert [e["version"] for e in _history(api, "acct", "k")] == [9, 8, 7]
