"""The ordering proof: many clients, bulk and sync writes mixed on shared keys, real processes.

PostgreSQL + Redis + ``bulkapi serve`` (gunicorn, 2 processes) + ``bulkapi worker``
(2 processes). Client threads race upserts over a small key space for a bounded time;
every accepted write carries a unique write id and is timed from send to response. Then,
for every key, the versions the accepted writes produced must be exactly 1..n, each
write acknowledged before another was sent must have the lower version, and the stored
document must be the one with version n.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import create_key, run_cli, serve
from tests.support import (
    REDIS_URL,
    WAIT_SECONDS,
    HttpApi,
    service_env,
    start_workers,
    wait_until,
)

CLIENT_THREADS = 8
#: The load runs this long (monotonic seconds), or until MAX_REQUESTS_PER_THREAD.
RUN_SECONDS = 11.0
MAX_REQUESTS_PER_THREAD = 1500
KEYS = [f"k{n:02d}" for n in range(20)]
RTYPE = "item"
#: Share of requests that are bulk submissions (the rest are sync PUTs).
BULK_SHARE = 0.35
MAX_OPS_PER_JOB = 8
#: What "really exercised concurrency" means: at least this many of each kind accepted.
MIN_ACCEPTED_EACH = 50


@dataclass
class Write:
    key: str
    write_id: str
    kind: str  # "bulk" or "sync"
    sent: float
    acked: float
    version: int | None = None
    job_id: str | None = None
    index: int | None = None


@dataclass
class Ledger:
    """Everything the clients saw, shared by the threads (appends only, under a lock)."""

    writes: list[Write] = field(default_factory=list)
    jobs: set[str] = field(default_factory=set)
    busy: int = 0
    waited_requests: int = 0
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, writes: list[Write], job_id: str | None = None) -> None:
        with self.lock:
            self.writes.extend(writes)
            if job_id is not None:
                self.jobs.add(job_id)

    def note(self, problem: str) -> None:
        with self.lock:
            self.unexpected.append(problem)


class Client:
    """One client thread: a random mix of bulk submissions and sync PUTs until the deadline."""

    def __init__(self, number: int, base_url: str, key: str, ledger: Ledger) -> None:
        self.number = number
        self.base_url = base_url
        self.ledger = ledger
        self.rng = random.Random(1000 + number)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def run(self, deadline: float) -> None:
        try:
            for n in range(MAX_REQUESTS_PER_THREAD):
                if time.monotonic() >= deadline:
                    return
                if self.rng.random() < BULK_SHARE:
                    self.bulk(n)
                else:
                    self.sync(n)
        except Exception as error:  # a write whose fate is unknown fails the test
            self.ledger.note(f"client {self.number}: {error!r}")

    def bulk(self, n: int) -> None:
        keys = self.rng.sample(KEYS, self.rng.randint(1, MAX_OPS_PER_JOB))
        write_ids = [f"t{self.number}-r{n}-b{i}" for i in range(len(keys))]
        operations = [
            {"op": "upsert", "type": RTYPE, "id": k, "data": {"write_id": w}}
            for k, w in zip(keys, write_ids, strict=True)
        ]
        sent = time.monotonic()
        response = self.session.post(
            self.base_url + "/v1/bulk", json={"operations": operations}, timeout=WAIT_SECONDS
        )
        acked = time.monotonic()
        if response.status_code != 202:
            self.ledger.note(f"bulk {response.status_code}: {response.text[:300]}")
            return
        job_id = response.json()["id"]
        self.ledger.add(
            [
                Write(k, w, "bulk", sent, acked, job_id=job_id, index=i)
                for i, (k, w) in enumerate(zip(keys, write_ids, strict=True))
            ],
            job_id,
        )

    def sync(self, n: int) -> None:
        key = self.rng.choice(KEYS)
        write_id = f"t{self.number}-r{n}-s"
        headers = {"Prefer": "wait=5"} if self.rng.random() < 0.5 else {}
        sent = time.monotonic()
        response = self.session.put(
            f"{self.base_url}/v1/resources/{RTYPE}/{key}",
            json={"write_id": write_id},
            headers=headers,
            timeout=WAIT_SECONDS,
        )
        acked = time.monotonic()
        if response.status_code in (200, 201):
            body = response.json()
            if body["data"] != {"write_id": write_id}:
                self.ledger.note(f"sync {key} answered another document: {body}")
            if response.headers.get("ETag") != f'"{body["version"]}"':
                self.ledger.note(f"sync {key} ETag {response.headers.get('ETag')}: {body}")
            if (response.status_code == 201) != (body["version"] == 1):
                self.ledger.note(f"sync {key} status {response.status_code} for {body}")
            self.ledger.add([Write(key, write_id, "sync", sent, acked, version=body["version"])])
            with self.ledger.lock:
                self.ledger.waited_requests += bool(headers)
        elif response.status_code == 409 and response.json().get("code") == "resource_busy":
            with self.ledger.lock:
                self.ledger.busy += 1
        else:
            self.ledger.note(f"sync {response.status_code}: {response.text[:300]}")


def _fill_bulk_versions(api: HttpApi, ledger: Ledger) -> Counter[str]:
    """Wait for every job, then take each bulk write's version from its job's results."""
    by_job: dict[str, list[Write]] = defaultdict(list)
    for write in ledger.writes:
        if write.job_id is not None:
            by_job[write.job_id].append(write)
    statuses: Counter[str] = Counter()
    for job_id, writes in by_job.items():
        job = api.wait_job(job_id)
        statuses[job["status"]] += 1
        results = {result["index"]: result for result in api.results(job_id)}
        assert len(results) == len(writes) == job["total"], (job, results)
        for write in writes:
            result = results[write.index]
            assert result["id"] == write.key, result
            assert result["status"] == "succeeded", result
            write.version = result["version"]
    return statuses


def _violations_of_real_time_order(writes: list[Write]) -> list[str]:
    """Pairs (A, B) on one key where B was sent after A's response but got a lower version.

    With writes sorted by version, B is violated iff some later-version A had already been
    acknowledged when B was sent: compare B.sent with the minimum ack time of the suffix.
    """
    ordered = sorted(writes, key=lambda w: w.version or 0)
    found = []
    earliest_ack_after: Write | None = None
    for write in reversed(ordered):
        if earliest_ack_after is not None and earliest_ack_after.acked < write.sent:
            found.append(
                f"{write.key}: {earliest_ack_after.write_id} ({earliest_ack_after.kind}) "
                f"acknowledged before {write.write_id} ({write.kind}) was sent, yet has "
                f"version {earliest_ack_after.version} > {write.version}"
            )
        if earliest_ack_after is None or write.acked < earliest_ack_after.acked:
            earliest_ack_after = write
    return found


def _interleaved_keys(writes_by_key: dict[str, list[Write]]) -> int:
    """Keys whose history has a sync write between two bulk writes (or the reverse)."""
    count = 0
    for writes in writes_by_key.values():
        kinds = [w.kind for w in sorted(writes, key=lambda w: w.version or 0)]
        changes = sum(1 for a, b in itertools.pairwise(kinds) if a != b)
        count += changes >= 2
    return count


@pytest.mark.slow
def test_writes_to_each_key_take_effect_once_in_acceptance_order_under_concurrent_load(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    env = service_env(postgres_url, REDIS_URL, redis_namespace, BULKAPI_WEB_PROCESSES="2")
    upgraded = run_cli(["db", "upgrade"], env)
    assert upgraded.returncode == 0, upgraded.stderr
    key = create_key(env, "ordering")
    with start_workers(env, tmp_path, processes=2, threads=4) as workers:
        server, base_url = serve(env, tmp_path / "api.log")
        with server:
            # Both forked their processes by now, but give a loaded machine time to show them.
            wait_until(lambda: len(server.children()) == 2, what="gunicorn's 2 API processes")
            wait_until(
                lambda: len(workers.grandchildren()) == 2, what="dramatiq's 2 worker processes"
            )
            ledger = Ledger()
            deadline = time.monotonic() + RUN_SECONDS
            threads = [
                threading.Thread(target=Client(n, base_url, key, ledger).run, args=(deadline,))
                for n in range(CLIENT_THREADS)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT_SECONDS)
            assert not any(thread.is_alive() for thread in threads), "clients did not finish"
            assert ledger.unexpected == [], ledger.unexpected[:10]

            api = HttpApi(base_url, key)
            job_statuses = _fill_bulk_versions(api, ledger)
            assert set(job_statuses) == {"succeeded"}, job_statuses

            writes_by_key: dict[str, list[Write]] = defaultdict(list)
            for write in ledger.writes:
                writes_by_key[write.key].append(write)
            violations: list[str] = []
            for rkey, writes in sorted(writes_by_key.items()):
                versions = sorted(w.version or 0 for w in writes)
                assert versions == list(range(1, len(writes) + 1)), (rkey, versions)
                violations.extend(_violations_of_real_time_order(writes))
                last = max(writes, key=lambda w: w.version or 0)
                stored = api.request("GET", f"/v1/resources/{RTYPE}/{rkey}")
                assert stored.status_code == 200, stored.text
                assert stored.json()["data"] == {"write_id": last.write_id}, (rkey, last)
                assert stored.json()["version"] == len(writes)
                assert stored.headers["ETag"] == f'"{len(writes)}"'
            assert violations == [], violations[:10]

    kinds = Counter(w.kind for w in ledger.writes)
    keys_with_both = sum(
        1 for writes in writes_by_key.values() if {w.kind for w in writes} == {"bulk", "sync"}
    )
    interleaved = _interleaved_keys(writes_by_key)
    print(
        f"\nordering run: {kinds['bulk']} bulk ops in {len(ledger.jobs)} jobs, "
        f"{kinds['sync']} sync writes ({ledger.waited_requests} with Prefer: wait), "
        f"{ledger.busy} resource_busy rejections, {len(writes_by_key)} keys "
        f"({keys_with_both} with both kinds, {interleaved} interleaved)"
    )
    assert kinds["bulk"] >= MIN_ACCEPTED_EACH, kinds
    assert kinds["sync"] >= MIN_ACCEPTED_EACH, kinds
    assert keys_with_both >= len(KEYS) // 2, keys_with_both
    assert interleaved >= 1, "no key saw sync and bulk writes interleave"
