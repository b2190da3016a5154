"""Fair draining: one tenant's huge job does not hold back another tenant's small one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson
import pytest

from tests.integration.conftest import run_cli
from tests.support import (
    REDIS_URL,
    HttpApi,
    create_api_key,
    fresh_postgres_database,
    service_env,
    start_server,
    start_workers,
    wait_until,
)

#: Size of the big tenant's job.
BIG = 100_000


def _ndjson(prefix: str, count: int) -> bytes:
    return b"".join(
        orjson.dumps({"op": "upsert", "type": "lead", "id": f"{prefix}{i}", "data": {"n": i}})
        + b"\n"
        for i in range(count)
    )


def _submit(api: HttpApi, body: bytes) -> dict[str, object]:
    response = api.request(
        "POST", "/v1/bulk", data=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 202, response.text
    job: dict[str, object] = response.json()
    return job


def _seconds(job: dict[str, object]) -> float:
    started = datetime.fromisoformat(str(job["created_at"]))
    return (datetime.fromisoformat(str(job["finished_at"])) - started).total_seconds()


@pytest.mark.slow
def test_a_small_job_finishes_while_another_tenants_big_job_is_still_draining(
    tmp_path: Path, redis_namespace: str
) -> None:
    with fresh_postgres_database() as url:
        env = service_env(url, REDIS_URL, redis_namespace)
        assert run_cli(["db", "upgrade"], env).returncode == 0
        server, base = start_server(env, tmp_path)
        workers = start_workers(env, tmp_path, processes=2, threads=4)
        try:
            big = HttpApi(base, create_api_key(env, "tenant-a"))
            small = HttpApi(base, create_api_key(env, "tenant-b"))

            alone = small.wait_job(str(_submit(small, _ndjson("alone", 10))["id"]))
            assert alone["status"] == "succeeded"

            big_job = _submit(big, _ndjson("a", BIG))
            wait_until(
                lambda: (
                    big.request("GET", f"/v1/jobs/{big_job['id']}").json()["counts"]["succeeded"]
                    > 0
                ),
                what="the big job to start applying",
            )
            small_job = small.wait_job(str(_submit(small, _ndjson("b", 10))["id"]))
            big_then = big.request("GET", f"/v1/jobs/{big_job['id']}").json()

            assert small_job["status"] == "succeeded"
            assert big_then["counts"]["pending"] > 0, "the big job finished first"
            big_final = big.wait_job(str(big_job["id"]))
            assert big_final["status"] == "succeeded"
            assert small_job["finished_at"] < big_final["finished_at"]
            print(
                f"small job alone: {_seconds(alone):.2f}s; beside a {BIG}-op job: "
                f"{_seconds(small_job):.2f}s; big job: {_seconds(big_final):.2f}s "
                f"(pending when the small one finished: {big_then['counts']['pending']})"
            )
        finally:
            workers.stop()
            server.stop()
