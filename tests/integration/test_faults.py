"""Durability under faults: nothing accepted is lost or applied twice.

Real processes over real HTTP: PostgreSQL, Redis, ``bulkapi serve`` and ``bulkapi worker``.
Every test submits a workload of 20,000 upserts as several jobs over the *same* keys
(job j writes ``{"job": j, ...}`` to every key), injects its fault while the jobs are
being applied, lets the system recover on its own (a new worker where the fault killed
them; the sweeper for lost wake-ups), and then proves from the job results and the
resources table that:

- every job reached the right terminal status, its counts add up and each status
  transition is recorded once;
- for every key the versions the accepted writes produced are exactly 1..n, in job
  submission order (no write lost, none applied twice, none out of order);
- each key's stored document and version are those of its last applied write.

Recovery times (fault → every job terminal) are printed, never asserted on.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import requests

from bulkapi.store.database import make_engine
from bulkapi.store.tenants import authenticate
from tests.integration.private_services import private_postgres, private_redis
from tests.support import (
    REDIS_URL,
    TERMINAL,
    WAIT_SECONDS,
    HttpApi,
    ManagedProcess,
    migrated_with_key,
    service_env,
    start_server,
    start_workers,
    wait_until,
)
from tests.types_for_tests import EFFECT_LOG

pytestmark = pytest.mark.slow

#: Jobs per workload, each an upsert of every key: JOBS x KEYS operations in all.
JOBS = 4
KEYS = 5_000
#: Seconds one poll of the job states may take (a restarting database may not answer).
POLL_TIMEOUT = 5.0
#: Generous bound on recovery; a hang fails the test, a slow recovery does not.
RECOVERY_SECONDS = 4 * WAIT_SECONDS // 2


@dataclass
class Workload:
    rtype: str
    keys: list[str]
    #: The operations of each job, in submission order.
    jobs: list[list[dict[str, Any]]]
    job_ids: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(ops) for ops in self.jobs)


def make_workload(rtype: str = "item", poison: tuple[int, int] | None = None) -> Workload:
    """JOBS jobs, each upserting every one of KEYS keys (in a shuffled order of its own).

    ``poison=(job, key_index)`` marks that one write ``{"poison": true}``.
    """
    prefix = uuid.uuid4().hex[:6]
    keys = [f"{prefix}-{n:05d}" for n in range(KEYS)]
    rng = random.Random(7)
    jobs = []
    for j in range(JOBS):
        order = list(range(KEYS))
        rng.shuffle(order)
        ops = []
        for n in order:
            data: dict[str, Any] = {"job": j, "n": n}
            if poison == (j, n):
                data["poison"] = True
            ops.append({"op": "upsert", "type": rtype, "id": keys[n], "data": data})
        jobs.append(ops)
    return Workload(rtype, keys, jobs)


def submit_all(api: HttpApi, workload: Workload) -> None:
    """Submit the jobs one after another: admission order is submission order."""
    for j, ops in enumerate(workload.jobs):
        response = api.request("POST", "/v1/bulk", json={"operations": ops, "metadata": {"job": j}})
        assert response.status_code == 202, response.text[:500]
        workload.job_ids.append(response.json()["id"])


def job_states(api: HttpApi, job_ids: list[str]) -> list[dict[str, Any]] | None:
    """Every job's representation (one GET /v1/jobs), or None when the service does not
    answer right now (a restarting database, say)."""
    try:
        response = requests.get(
            f"{api.base_url}/v1/jobs?limit=100",
            headers={"Authorization": f"Bearer {api.key}"},
            timeout=POLL_TIMEOUT,
        )
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    by_id = {job["id"]: job for job in response.json()["items"]}
    assert set(job_ids) <= set(by_id), (job_ids, list(by_id))
    return [by_id[job_id] for job_id in job_ids]


def applied(states: list[dict[str, Any]]) -> int:
    return sum(state["total"] - state["counts"]["pending"] for state in states)


def wait_mid_job(api: HttpApi, workload: Workload) -> int:
    """Wait until the jobs have started applying; fail if they finish before the fault."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        assert time.monotonic() < deadline, "the jobs never started applying"
        states = job_states(api, workload.job_ids)
        if states is not None:
            done = applied(states)
            assert done < sum(state["total"] for state in states), (
                "the workload finished before the fault could be injected: raise KEYS"
            )
            if done > 0:
                return done
        time.sleep(0.01)


def pending_after_fault(api: HttpApi, workload: Workload) -> int:
    """Operations still pending once the fault is in (the fault really was mid-job)."""
    states = wait_until(
        lambda: job_states(api, workload.job_ids), what="job states after the fault"
    )
    return workload.total - applied(states)


@dataclass
class Recovery:
    jobs: list[dict[str, Any]]
    #: Seconds from the fault to the first poll that saw every job terminal.
    seconds: float
    #: Seconds from the fault to the first poll that saw fewer operations pending than
    #: ``pending`` (None if that poll was also the terminal one).
    resumed: float | None


def wait_terminal(api: HttpApi, workload: Workload, since: float, pending: int) -> Recovery:
    """Wait (tolerating a service that does not answer yet) until every job is terminal."""
    resumed: list[float] = []

    def all_terminal() -> list[dict[str, Any]] | None:
        states = job_states(api, workload.job_ids)
        if states is None:
            return None
        if not resumed and workload.total - applied(states) < pending:
            resumed.append(time.monotonic() - since)
        if all(state["status"] in TERMINAL for state in states):
            return states
        return None

    states = wait_until(
        all_terminal, timeout=RECOVERY_SECONDS, interval=0.1, what="every job to be terminal"
    )
    return Recovery(states, time.monotonic() - since, resumed[0] if resumed else None)


def report(name: str, recovery: Recovery, at_fault: int, pending: int, total: int) -> None:
    resumed = "-" if recovery.resumed is None else f"{recovery.resumed:.2f}s"
    print(
        f"\n[fault] {name}: all jobs terminal {recovery.seconds:.2f}s after the fault "
        f"(progress resumed after {resumed}); {at_fault}/{total} applied when the fault "
        f"began, {pending} pending after it"
    )


def verify_exactly_once(
    api: HttpApi,
    database_url: str,
    workload: Workload,
    jobs: list[dict[str, Any]],
    failures: dict[tuple[int, str], str] | None = None,
) -> None:
    """The proof: statuses, counts, per-key versions 1..n in job order, stored documents.

    ``failures`` maps (job, key) to the error code that one write must fail with.
    """
    failures = failures or {}
    versions: dict[str, list[int]] = defaultdict(list)
    last_doc: dict[str, dict[str, Any]] = {}
    for j, (job_id, ops, job) in enumerate(zip(workload.job_ids, workload.jobs, jobs, strict=True)):
        expected_failed = sum(1 for (fj, _key) in failures if fj == j)
        expected_status = "partially_succeeded" if expected_failed else "succeeded"
        assert job["id"] == job_id
        assert job["status"] == expected_status, job
        assert job["total"] == len(ops)
        assert job["counts"] == {
            "pending": 0,
            "succeeded": len(ops) - expected_failed,
            "failed": expected_failed,
            "cancelled": 0,
        }, job
        assert job["progress"] == 1.0, job
        history = [entry["status"] for entry in job["status_history"]]
        assert history == ["queued", "processing", expected_status], job["status_history"]

        results = api.results(job_id)
        assert [r["index"] for r in results] == list(range(len(ops))), job_id
        for result, op in zip(results, ops, strict=True):
            assert (result["type"], result["id"], result["op"]) == (op["type"], op["id"], "upsert")
            code = failures.get((j, op["id"]))
            if code is not None:
                assert result["status"] == "failed", result
                assert result["error"]["code"] == code, result
                assert result.get("version") is None, result
                continue
            assert result["status"] == "succeeded", result
            versions[op["id"]].append(result["version"])
            last_doc[op["id"]] = op["data"]

    # Job j's write to a key was admitted after job j-1's, so it must have the next version.
    wrong = {
        key: found for key, found in versions.items() if found != list(range(1, len(found) + 1))
    }
    assert not wrong, (
        f"{len(wrong)} keys with versions not 1..n in order: {list(wrong.items())[:5]}"
    )
    assert set(versions) == set(workload.keys)

    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, connect_timeout=10) as conn:
        tenant_id = conn.execute(
            "SELECT tenant_id FROM jobs WHERE id = %s", (workload.job_ids[0],)
        ).fetchone()[0]
        rows = conn.execute(
            "SELECT rid, version, data FROM resources WHERE tenant_id = %s AND type = %s",
            (tenant_id, workload.rtype),
        ).fetchall()
        still_pending = conn.execute(
            "SELECT count(*) FROM operations WHERE job_id = ANY(%s) AND status = 'pending'",
            (workload.job_ids,),
        ).fetchone()[0]
    assert still_pending == 0
    stored = {rid: (version, data) for rid, version, data in rows}
    assert set(stored) == set(workload.keys)
    mismatched = [
        (key, stored[key], len(versions[key]), last_doc[key])
        for key in workload.keys
        if stored[key] != (len(versions[key]), last_doc[key])
    ]
    assert not mismatched, f"{len(mismatched)} keys stored wrongly: {mismatched[:5]}"

    for key in workload.keys[:: KEYS // 5]:  # and a sample as the API serves them
        response = api.request("GET", f"/v1/resources/{workload.rtype}/{key}")
        assert response.status_code == 200, response.text
        assert response.json()["data"] == last_doc[key]
        assert response.headers["ETag"] == f'"{len(versions[key])}"'


@dataclass
class Stack:
    """One deployment under test: its environment, API key, server and workers."""

    env: dict[str, str]
    database_url: str
    tmp: Path
    processes: ExitStack
    api: HttpApi
    worker_starts: int = 0

    def start_workers(self) -> ManagedProcess:
        self.worker_starts += 1
        workers = start_workers(self.env, self.tmp, name=f"worker-{self.worker_starts}")
        self.processes.callback(workers.stop)
        return workers

    def start_server(self, name: str, **extra: str) -> tuple[ManagedProcess, str]:
        server, base_url = start_server({**self.env, **extra}, self.tmp, name)
        self.processes.callback(server.stop)
        return server, base_url


@contextmanager
def deployment(tmp: Path, database_url: str, broker_url: str, namespace: str) -> Iterator[Stack]:
    """Schema, an API key and a normal ``bulkapi serve``; workers are the test's to start."""
    # Short drains and small batches keep a fault mid-job: with the defaults, a graceful
    # SIGTERM lets in-flight drains finish so much that little may be left to recover.
    env = service_env(
        database_url,
        broker_url,
        namespace,
        BULKAPI_SWEEP_INTERVAL="1",
        BULKAPI_DRAIN_BUDGET="0.2",
        BULKAPI_BATCH_SIZE="100",
    )
    key = migrated_with_key(database_url, "faults")
    with ExitStack() as processes:
        stack = Stack(env, database_url, tmp, processes, HttpApi("", key))
        _server, base_url = stack.start_server("api")
        stack.api.base_url = base_url
        yield stack


def test_workers_killed_with_sigkill_mid_job_then_replaced(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    with deployment(tmp_path, postgres_url, REDIS_URL, redis_namespace) as stack:
        workers = stack.start_workers()
        workload = make_workload()
        submit_all(stack.api, workload)
        at_fault = wait_mid_job(stack.api, workload)
        fault = time.monotonic()
        victims = [workers.pid, *workers.children()]
        workers.kill()  # the whole process group: master and every worker process
        assert workers.process is not None and workers.process.returncode == -9
        pending = pending_after_fault(stack.api, workload)
        assert pending > 0, "the kill came too late to interrupt anything"
        replacement = stack.start_workers()
        assert replacement.pid not in victims
        recovery = wait_terminal(stack.api, workload, fault, pending)
        report("worker SIGKILL + new worker", recovery, at_fault, pending, workload.total)
        verify_exactly_once(stack.api, stack.database_url, workload, recovery.jobs)


def test_redis_restarted_with_its_data_lost_mid_job(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    with (
        private_redis(tmp_path) as broker,
        deployment(tmp_path, postgres_url, broker.url, redis_namespace) as stack,
    ):
        stack.start_workers()
        workload = make_workload()
        submit_all(stack.api, workload)
        at_fault = wait_mid_job(stack.api, workload)
        fault = time.monotonic()
        broker.kill()  # no persistence: every queued and delayed wake-up is gone
        broker.start()  # a new, empty server on the same port
        pending = pending_after_fault(stack.api, workload)
        assert pending > 0, "the Redis restart came too late to interrupt anything"
        recovery = wait_terminal(stack.api, workload, fault, pending)
        report("Redis killed + restarted empty", recovery, at_fault, pending, workload.total)
        verify_exactly_once(stack.api, stack.database_url, workload, recovery.jobs)


def test_api_dies_between_commit_and_wakeups_and_the_sweeper_finishes_the_jobs(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    """Every job is admitted by a server that dies right after its commit, so no wake-up
    is ever sent for any of them: only the workers' sweeper can get them applied.

    Job 0 is crashed first and found through a normal server; jobs 1.. are crashed while
    the sweeper-driven application of the earlier jobs is under way.
    """
    with deployment(tmp_path, postgres_url, REDIS_URL, redis_namespace) as stack:
        stack.start_workers()
        crashing, crash_url = stack.start_server("api-crash", BULKAPI_FAULT_CRASH_AFTER_COMMIT="1")
        workload = make_workload()
        fault = first_crash = time.monotonic()
        pickup = 0.0
        for j, ops in enumerate(workload.jobs):
            wait_until(lambda: _ready(crash_url), what="the crashing server to have a live worker")
            fault = time.monotonic()
            with pytest.raises(requests.ConnectionError):
                requests.post(
                    crash_url + "/v1/bulk",
                    json={"operations": ops, "metadata": {"job": j}},
                    headers={"Authorization": f"Bearer {stack.api.key}"},
                    timeout=WAIT_SECONDS,
                )
            workload.job_ids.append(_find_job(stack.api, j))
            if j == 0:  # nothing but the sweeper can start it: wait until it has
                wait_mid_job(stack.api, workload)
                pickup = time.monotonic() - first_crash
        # Each POST killed the API process that committed it (gunicorn then started another).
        wait_until(
            lambda: crashing.log().count("exited with code 137") == JOBS,
            timeout=30,
            what=f"gunicorn to report {JOBS} API processes dead with code 137",
        )
        states = wait_until(lambda: job_states(stack.api, workload.job_ids), what="job states")
        at_fault = applied(states)
        pending = workload.total - at_fault
        assert pending > 0
        recovery = wait_terminal(stack.api, workload, fault, pending)
        report(
            f"API crash after commit (the sweeper started job 0 {pickup:.2f}s after its "
            "crash; times below from the last crash)",
            recovery,
            at_fault,
            pending,
            workload.total,
        )
        verify_exactly_once(stack.api, stack.database_url, workload, recovery.jobs)


def _ready(base_url: str) -> bool:
    try:
        return requests.get(base_url + "/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _find_job(api: HttpApi, j: int) -> str:
    """The id of the job submitted with metadata ``{"job": j}``, through GET /v1/jobs."""

    def found() -> str | None:
        response = api.request("GET", "/v1/jobs?limit=20")
        assert response.status_code == 200, response.text
        ids = [job["id"] for job in response.json()["items"] if job["metadata"] == {"job": j}]
        assert len(ids) <= 1, f"job {j} was admitted more than once: {ids}"
        return ids[0] if ids else None

    return str(wait_until(found, timeout=30, what=f"crashed job {j} in GET /v1/jobs"))


def test_postgres_restarted_mid_job(tmp_path: Path, redis_namespace: str) -> None:
    with private_postgres() as cluster:
        database_url = cluster.create_database("bulkapi")
        with deployment(tmp_path, database_url, REDIS_URL, redis_namespace) as stack:
            stack.start_workers()
            workload = make_workload()
            submit_all(stack.api, workload)
            at_fault = wait_mid_job(stack.api, workload)
            fault = time.monotonic()
            cluster.restart()  # -m fast: open transactions roll back, connections drop
            restarted = time.monotonic() - fault
            pending = pending_after_fault(stack.api, workload)
            assert pending > 0, "the PostgreSQL restart came too late to interrupt anything"
            recovery = wait_terminal(stack.api, workload, fault, pending)
            report(
                f"PostgreSQL restart (pg_ctl restart -m fast took {restarted:.2f}s)",
                recovery,
                at_fault,
                pending,
                workload.total,
            )
            verify_exactly_once(stack.api, stack.database_url, workload, recovery.jobs)


def test_a_poison_operation_fails_alone_and_later_writes_to_its_key_still_apply(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    poison_job, poison_key = 1, 42
    with deployment(tmp_path, postgres_url, REDIS_URL, redis_namespace) as stack:
        stack.start_workers()
        workload = make_workload("guarded", poison=(poison_job, poison_key))
        started = time.monotonic()
        submit_all(stack.api, workload)
        recovery = wait_terminal(stack.api, workload, started, workload.total)
        print(
            f"\n[fault] poison: {workload.total} operations terminal "
            f"{recovery.seconds:.2f}s after the first submission"
        )
        key = workload.keys[poison_key]
        verify_exactly_once(
            stack.api,
            stack.database_url,
            workload,
            recovery.jobs,
            failures={(poison_job, key): "apply_failed"},
        )
        results = stack.api.results(workload.job_ids[poison_job])
        failed = [r for r in results if r["status"] == "failed"]
        assert [r["id"] for r in failed] == [key]
        message = failed[0]["error"]["message"]
        assert "PoisonError" in message and "always breaks the rule" in message, message
        # The key is not stuck: jobs 2.. applied after the poison write, and so does this.
        response = stack.api.request(
            "PUT", f"/v1/resources/guarded/{key}", json={"after": "poison"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["version"] == JOBS  # JOBS - 1 applied writes, then this one
        assert response.headers["ETag"] == f'"{JOBS}"'


def test_sigterm_to_the_worker_mid_job_loses_nothing(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    with deployment(tmp_path, postgres_url, REDIS_URL, redis_namespace) as stack:
        workers = stack.start_workers()
        workload = make_workload()
        submit_all(stack.api, workload)
        at_fault = wait_mid_job(stack.api, workload)
        fault = time.monotonic()
        assert workers.process is not None
        workers.process.terminate()  # SIGTERM to the master, as a supervisor sends it
        code = workers.process.wait(WAIT_SECONDS)
        stopped = time.monotonic() - fault
        assert code == 0, f"worker exit code {code} after SIGTERM:\n{workers.log()[-3000:]}"
        pending = pending_after_fault(stack.api, workload)
        assert pending > 0, "SIGTERM came too late to interrupt anything"
        stack.start_workers()
        recovery = wait_terminal(stack.api, workload, fault, pending)
        report(
            f"worker SIGTERM (graceful stop took {stopped:.2f}s) + new worker",
            recovery,
            at_fault,
            pending,
            workload.total,
        )
        verify_exactly_once(stack.api, stack.database_url, workload, recovery.jobs)


def _effect_log(tenant_id: str, rid: str) -> list[tuple[int, int]]:
    """(version, attempt) of every run of the ``record`` effect of one key, in order."""
    path = Path(os.environ[EFFECT_LOG])
    if not path.exists():
        return []
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return [
        (line["version"], line["attempt"])
        for line in lines
        if line["tenant_id"] == tenant_id and line["id"] == rid
    ]


def test_a_worker_killed_inside_an_effect_handler_runs_it_again_and_keeps_the_order(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    with deployment(tmp_path, postgres_url, REDIS_URL, redis_namespace) as stack:
        workers = stack.start_workers()
        rid = f"fx-{uuid.uuid4().hex[:6]}"
        blocked = {"op": "upsert", "type": "recorded", "id": rid, "data": {"effect_blocks": True}}
        later = {"op": "patch", "type": "recorded", "id": rid, "data": {"effect_blocks": None}}
        first = stack.api.request("POST", "/v1/bulk", json={"operations": [blocked]}).json()
        second = stack.api.request("POST", "/v1/bulk", json={"operations": [later]}).json()
        for job in (first, second):
            assert stack.api.wait_job(job["id"])["status"] == "succeeded"
        engine = make_engine(stack.database_url)
        try:
            with engine.connect() as conn:
                tenant_id = authenticate(conn, stack.api.key).tenant_id  # type: ignore[union-attr]
        finally:
            engine.dispose()
        wait_until(lambda: _effect_log(tenant_id, rid) == [(1, 1)], what="the handler to start")
        workers.kill()  # mid-handler: the attempt never reports back
        assert _effect_log(tenant_id, rid) == [(1, 1)]  # version 2's effect waited
        stack.start_workers()

        def settled() -> bool:
            effects = stack.api.request("GET", f"/v1/resources/recorded/{rid}/effects").json()
            return len(effects["items"]) == 2 and all(
                effect["status"] == "succeeded" for effect in effects["items"]
            )

        wait_until(settled, what="both effects to succeed after the restart")
        newest, oldest = stack.api.request("GET", f"/v1/resources/recorded/{rid}/effects").json()[
            "items"
        ]
        # Version 2's one call comes after version 1's retry. If the killed pass had taken
        # it along behind version 1 (both were due), that claim used an attempt too.
        assert newest["attempts"] in (1, 2)
        assert _effect_log(tenant_id, rid) == [(1, 1), (1, 2), (2, newest["attempts"])]
        assert (oldest["version"], oldest["attempts"]) == (1, 2)
        assert newest["version"] == 2
