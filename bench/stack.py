"""What a benchmark run starts and stops: a database, the API, workers, the baselines.

Only 127.0.0.1 is touched. Every database and Redis namespace is unique to the run and
removed at the end; every process is started here and stopped by its own pid.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import requests

from bench.baseline_sql import CRUD_TABLE, table_ddl
from bench.resource_types import EFFECT_LOG
from tests.support import (
    ROOT,
    ManagedProcess,
    bulkapi_argv,
    create_api_key,
    forget_namespace,
    free_port,
    service_env,
    wait_until,
)

PG_ADMIN_URL = os.environ.get("BULKAPI_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BULKAPI_BENCH_REDIS", "redis://127.0.0.1:6379/0")
#: gunicorn shape shared by the API and the CRUD baseline (bulkapi's defaults with a broker).
WEB_PROCESSES = 2
WEB_THREADS = 16
#: Threads per worker process, for bulkapi's workers and the naive baseline alike.
WORKER_THREADS = 4
#: Per-tenant request rate of the benchmark's services: high enough that no load here is
#: refused, so the limiter's cost is measured and its 429s never are.
RATE_LIMIT = "1000000/second"
#: The types module every bulkapi service of the run loads.
TYPES_MODULE = "bench.resource_types"
#: Seconds a service gets to come up before the run gives up.
START_TIMEOUT = 60
_READY = re.compile(rb"Worker process is ready for action")


@contextmanager
def bench_database() -> Iterator[str]:
    """A new PostgreSQL database for this run (a unique name), dropped with FORCE at the end."""
    name = f"bulkapi_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _ready_count(proc: ManagedProcess) -> int:
    return len(_READY.findall(proc.log_path.read_bytes())) if proc.log_path.exists() else 0


def wait_http(proc: ManagedProcess, url: str) -> None:
    def ready() -> bool:
        if proc.process is not None and proc.process.poll() is not None:
            raise RuntimeError(f"{proc.argv} exited:\n{proc.log()[-3000:]}")
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout=START_TIMEOUT, what=url)


@dataclass
class Stack:
    """The services of one run; ``close`` stops whatever is still running."""

    pg_url: str
    logs: Path
    namespace: str = field(default_factory=lambda: f"bulkapi-bench-{uuid.uuid4().hex[:10]}")
    env: dict[str, str] = field(default_factory=dict)
    api: ManagedProcess | None = None
    api_url: str = ""
    key: str = ""
    workers: ManagedProcess | None = None
    worker_count: int = 0
    _started: list[ManagedProcess] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        """The database as a plain libpq URL, for psycopg baselines."""
        return self.pg_url.replace("postgresql+psycopg://", "postgresql://", 1)

    def start_api(self) -> None:
        self.env = self.service_env(self.pg_url, REDIS_URL)
        subprocess.run(
            bulkapi_argv("db", "upgrade"), env=self.env, cwd=ROOT, check=True, capture_output=True
        )
        self.key = create_api_key(self.env, "bench")
        self.api, self.api_url = self.serve(self.env, "api")

    def service_env(self, database_url: str, broker_url: str | None) -> dict[str, str]:
        """The environment of a bulkapi process of this run (production or embedded)."""
        env = service_env(
            database_url,
            broker_url,
            self.namespace,
            BULKAPI_SWEEP_INTERVAL="5",
            BULKAPI_WEB_PROCESSES=str(WEB_PROCESSES if broker_url else 1),
            BULKAPI_WEB_THREADS=str(WEB_THREADS),
            BULKAPI_RATE_LIMIT=RATE_LIMIT,
            BULKAPI_TYPES=TYPES_MODULE,
        )
        env[EFFECT_LOG] = str(self.effect_log)
        return env

    @property
    def effect_log(self) -> Path:
        """Where the ``stamped`` type's effect writes a line per run."""
        return self.logs / "effects.ndjson"

    def serve(self, env: dict[str, str], name: str) -> tuple[ManagedProcess, str]:
        """``bulkapi serve`` with ``env`` on a free port, once ``/readyz`` answers 200."""
        port = free_port()
        proc = self._start(bulkapi_argv("serve", "--port", str(port)), env, name)
        url = f"http://127.0.0.1:{port}"
        wait_http(proc, url + "/readyz")
        return proc, url

    def embedded(self, db_path: Path) -> tuple[ManagedProcess, str, str]:
        """``bulkapi serve`` in embedded mode (SQLite file, no broker): process, URL, key."""
        env = self.service_env(f"sqlite:///{db_path}", None)
        subprocess.run(
            bulkapi_argv("db", "upgrade"), env=env, cwd=ROOT, check=True, capture_output=True
        )
        key = create_api_key(env, "bench")
        proc, url = self.serve(env, "embedded")
        return proc, url, key

    def start_workers(self, processes: int) -> None:
        """(Re)start ``bulkapi worker`` with ``processes`` and wait until all are ready."""
        self.stop_workers()
        proc = self._start(
            bulkapi_argv("worker", "--processes", str(processes), "--threads", str(WORKER_THREADS)),
            self.env,
            f"worker-{processes}",
        )
        wait_until(
            lambda: _ready_count(proc) >= processes, timeout=START_TIMEOUT, what="bulkapi workers"
        )
        self.workers, self.worker_count = proc, processes

    def stop_workers(self) -> None:
        if self.workers is not None:
            self.workers.stop()
            self.workers, self.worker_count = None, 0

    def start_naive_workers(self, processes: int, naive_env: dict[str, str]) -> ManagedProcess:
        argv = [
            sys.executable,
            "-m",
            "dramatiq",
            "bench.naive",
            "--processes",
            str(processes),
            "--threads",
            str(WORKER_THREADS),
            "--queues",
            "bench-naive",
        ]
        env = {**os.environ, **naive_env}
        proc = self._start(argv, env, f"naive-{processes}")
        wait_until(
            lambda: _ready_count(proc) >= processes, timeout=START_TIMEOUT, what="naive workers"
        )
        return proc

    def start_crud(self) -> tuple[ManagedProcess, str]:
        """The Flask + psycopg CRUD baseline behind gunicorn gthread, shaped like the API."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(table_ddl(CRUD_TABLE))
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "bench.crud:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(WEB_PROCESSES),
            "--threads",
            str(WEB_THREADS),
        ]
        env = {**os.environ, "BENCH_CRUD_DSN": self.dsn, "BENCH_CRUD_POOL_SIZE": str(WEB_THREADS)}
        proc = self._start(argv, env, "crud")
        url = f"http://127.0.0.1:{port}"
        wait_http(proc, url + "/healthz")
        return proc, url

    def _start(self, argv: list[str], env: dict[str, str], name: str) -> ManagedProcess:
        proc = ManagedProcess(argv, env, self.logs / f"{name}.log").start()
        self._started.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self._started):
            proc.stop()
        self._started.clear()
        forget_namespace(self.namespace, REDIS_URL)


@contextmanager
def running_stack(logs: Path) -> Iterator[Stack]:
    with bench_database() as pg_url:
        stack = Stack(pg_url.replace("postgresql://", "postgresql+psycopg://", 1), logs)
        try:
            stack.start_api()
            yield stack
        finally:
            stack.close()
            time.sleep(0.2)  # let the last connections go before the database is dropped
