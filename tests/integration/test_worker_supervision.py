"""`bulkapi worker` restarts Dramatiq's worker group when one of its processes dies.

Dramatiq's main process shuts the whole group down when a worker process dies; without a
restart nothing on the host would drain again. Real processes: `bulkapi worker` (the
supervisor) → Dramatiq's main process → its worker processes.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.support import (
    REDIS_URL,
    WAIT_SECONDS,
    HttpApi,
    migrated_with_key,
    service_env,
    start_server,
    start_workers,
    wait_until,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_worker_process_gets_its_group_restarted_and_work_goes_on(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    env = service_env(postgres_url, REDIS_URL, redis_namespace)
    key = migrated_with_key(postgres_url, "supervised")
    server, base_url = start_server(env, tmp_path)
    supervisor = start_workers(env, tmp_path)
    try:
        first = wait_until(
            lambda: (found := supervisor.grandchildren()) and len(found) == 2 and found,
            what="the worker group's 2 processes",
        )
        os.kill(first[0], signal.SIGKILL)
        wait_until(
            lambda: (
                (found := supervisor.grandchildren())
                and len(found) == 2
                and not set(found) & set(first)
            ),
            timeout=WAIT_SECONDS,
            what="a new worker group",
        )
        assert supervisor.process is not None and supervisor.process.poll() is None
        api = HttpApi(base_url, key)
        operations = [
            {"op": "upsert", "type": "item", "id": f"i{n}", "data": {"n": n}} for n in range(200)
        ]
        job = api.request("POST", "/v1/bulk", json={"operations": operations})
        assert job.status_code == 202, job.text
        assert api.wait_job(job.json()["id"])["counts"]["succeeded"] == 200
        assert "restarting it" in supervisor.log()

        # Told to stop, the supervisor stops the group and does not restart it.
        group = [*supervisor.children(), *supervisor.grandchildren()]
        assert supervisor.stop() == 0
        for pid in group:
            assert not _alive(pid), f"process {pid} of the group outlived its supervisor"
    finally:
        supervisor.stop()
        server.stop()
