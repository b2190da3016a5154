"""Shared test machinery: real services, real processes, and a small API client.

Every process a test starts is stopped by it (``ManagedProcess`` is a context manager,
and the fixtures that hold one stop it on teardown).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import orjson
import psycopg
import redis
import requests
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, create_engine, func, select

from bulkapi.config import Settings
from bulkapi.core.keys import ResourceKey, partition_of
from bulkapi.core.operations import Operation, OpKind
from bulkapi.store.admission import NewJob, admit
from bulkapi.store.database import make_engine, utcnow
from bulkapi.store.migrate import upgrade
from bulkapi.store.tables import jobs, operations, resources
from bulkapi.store.tenants import create_key

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BULKAPI_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BULKAPI_TEST_REDIS", "redis://127.0.0.1:6379/0")
#: The resource types module every test service loads (see tests/types_for_tests.py).
TEST_TYPES = "tests.types_for_tests"
#: Seconds before a failed test effect's first retry (retries come due at sweeps).
TEST_EFFECT_BACKOFF = 0.1
#: Seconds before a failed test webhook's first retry, and the attempts it gets.
TEST_WEBHOOK_BACKOFF = 0.1
TEST_WEBHOOK_ATTEMPTS = 3
#: Settings every test service shares: fast retries, callbacks to the test's own
#: receiver on 127.0.0.1 allowed (the default refuses them; see test_webhooks.py).
TEST_SETTINGS: dict[str, Any] = {
    "effect_backoff": TEST_EFFECT_BACKOFF,
    "effect_attempts": 3,
    "webhook_backoff": TEST_WEBHOOK_BACKOFF,
    "webhook_attempts": TEST_WEBHOOK_ATTEMPTS,
    "allow_private_callbacks": True,
}
#: Generous bound for anything a test waits on (jobs, processes); never a performance claim.
WAIT_SECONDS = 120
TERMINAL = {"succeeded", "partially_succeeded", "failed", "cancelled"}


def require_postgres() -> None:
    """Fail (never skip) when PostgreSQL is missing: .ci/run starts it."""
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=5).close()
    except psycopg.Error as error:
        raise RuntimeError(f"PostgreSQL is required at {PG_ADMIN_URL}: {error}") from error


def require_redis() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
    except redis.RedisError as error:
        raise RuntimeError(f"Redis is required at {REDIS_URL}: {error}") from error


def forget_namespace(namespace: str, redis_url: str = REDIS_URL) -> None:
    """Delete a run's broker namespace from Redis: its queues, flags, rate buckets
    (``<namespace>-rate``) and the workers' heartbeats, which would otherwise outlive the
    run (heartbeats carry no TTL)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{namespace}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database for one test session (or one test), dropped afterwards."""
    require_postgres()
    name = f"bulkapi_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """A new, empty database of ``kind`` ("sqlite": a file in ``tmp_path``; "postgres")."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / f'{kind}.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], Any],
    timeout: float = WAIT_SECONDS,
    interval: float = 0.1,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], check=False, capture_output=True, text=True)
    return [int(found) for found in out.stdout.split()]


class ManagedProcess:
    """A child process in its own session, stopped (TERM, then KILL) when the test ends."""

    def __init__(
        self, argv: list[str], env: Mapping[str, str], log_path: Path, cwd: Path = ROOT
    ) -> None:
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        """Start the process once; later calls are no-ops (so ``with`` is safe on a
        process a helper already started)."""
        if self.process is not None:
            return self
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def children(self) -> list[int]:
        return children_of(self.pid)

    def grandchildren(self) -> list[int]:
        """E.g. the worker processes of `bulkapi worker` (supervisor → Dramatiq → workers)."""
        return [pid for child in self.children() for pid in children_of(child)]

    def stop(self, timeout: float = 60) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, no clean-up."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(WAIT_SECONDS)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def bulkapi_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "bulkapi.cli", *args]


def service_env(
    database_url: str, broker_url: str | None, namespace: str, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKAPI_")}
    env["BULKAPI_DATABASE_URL"] = database_url
    if broker_url:
        env["BULKAPI_BROKER_URL"] = broker_url
    env["BULKAPI_BROKER_NAMESPACE"] = namespace
    env["BULKAPI_SWEEP_INTERVAL"] = extra.pop("BULKAPI_SWEEP_INTERVAL", "1")
    env["BULKAPI_TYPES"] = extra.pop("BULKAPI_TYPES", TEST_TYPES)
    env["BULKAPI_EFFECT_BACKOFF"] = str(TEST_EFFECT_BACKOFF)
    env["BULKAPI_EFFECT_ATTEMPTS"] = "3"
    env["BULKAPI_WEBHOOK_BACKOFF"] = str(TEST_WEBHOOK_BACKOFF)
    env["BULKAPI_WEBHOOK_ATTEMPTS"] = str(TEST_WEBHOOK_ATTEMPTS)
    env["BULKAPI_ALLOW_PRIVATE_CALLBACKS"] = "1"
    # The test types module lives in this checkout, not in the installed package.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def migrated_with_key(database_url: str, tenant_prefix: str) -> str:
    """Migrate the database and create a key for a fresh tenant; the key's secret."""
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            _, key = create_key(conn, f"{tenant_prefix}-{uuid.uuid4().hex[:8]}")
    finally:
        engine.dispose()
    return key


def create_api_key(env: Mapping[str, str], tenant: str) -> str:
    out = subprocess.run(
        bulkapi_argv("keys", "create", "--tenant", tenant),
        env=dict(env),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return out.stdout.strip().splitlines()[-1]


@dataclass
class HttpApi:
    """A client of a running server over real HTTP."""

    base_url: str
    key: str

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        return requests.request(
            method, self.base_url + path, headers=headers, timeout=WAIT_SECONDS, **kwargs
        )

    def wait_job(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_SECONDS * 5
        while True:
            body: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}?wait=30").json()
            if body["status"] in TERMINAL:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not terminal: {body}")

    def results(self, job_id: str) -> list[dict[str, Any]]:
        response = self.request(
            "GET", f"/v1/jobs/{job_id}/results", headers={"Accept": "application/x-ndjson"}
        )
        return [orjson.loads(line) for line in response.content.splitlines() if line]


def wait_ready(proc: ManagedProcess, base_url: str) -> None:
    """Wait for /readyz to answer 200; fail at once if the server exits instead."""

    def ready() -> bool:
        if proc.process is not None and proc.process.poll() is not None:
            raise AssertionError(f"{proc.argv} exited: {proc.log()}")
        try:
            return requests.get(base_url + "/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, what=f"{proc.argv} to be ready")


def start_server(
    env: Mapping[str, str], tmp: Path, name: str = "api"
) -> tuple[ManagedProcess, str]:
    port = free_port()
    proc = ManagedProcess(bulkapi_argv("serve", "--port", str(port)), env, tmp / f"{name}.log")
    proc.start()
    base = f"http://127.0.0.1:{port}"
    wait_ready(proc, base)
    return proc, base


def row_count(database_url: str) -> int:
    """Rows in jobs, operations and resources: a refused request must add none."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return sum(
                conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table in (jobs, operations, resources)
            )
    finally:
        engine.dispose()


@dataclass
class RealServer:
    """`bulkapi serve` on 127.0.0.1 (embedded, SQLite) and a key to call it with."""

    host: str
    port: int
    key: str
    database_url: str
    process: ManagedProcess

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def embedded_server(tmp: Path, **env: str) -> Iterator[RealServer]:
    """A real server with these ``BULKAPI_*`` settings, stopped when the block ends."""
    url = f"sqlite:///{tmp / 'server.db'}"
    environment = service_env(url, None, f"bulkapi-server-{uuid.uuid4().hex[:8]}", **env)
    process, base = start_server(environment, tmp)
    try:
        key = create_api_key(environment, "real-server")
        host, port = base.removeprefix("http://").split(":")
        yield RealServer(host, int(port), key, url, process)
    finally:
        process.stop()


def start_workers(
    env: Mapping[str, str], tmp: Path, processes: int = 2, threads: int = 4, name: str = "worker"
) -> ManagedProcess:
    proc = ManagedProcess(
        bulkapi_argv("worker", "--processes", str(processes), "--threads", str(threads)),
        env,
        tmp / f"{name}.log",
    )
    return proc.start()


#: Partitions the store-level tests spread keys over (the default count).
STORE_PARTITIONS = Settings.partitions


def upserts_job(
    tenant: str, ids: list[str], rtype: str = "thing"
) -> tuple[NewJob, list[Operation]]:
    """A job of upserts of ``rtype`` keys ``ids`` for ``tenant`` (in ``STORE_PARTITIONS``
    partitions), and its operations, as the store admits them."""
    keys = [ResourceKey(rtype, rid) for rid in ids]
    partitions = [partition_of(tenant, key, STORE_PARTITIONS) for key in keys]
    return NewJob(tenant, keys, partitions), [
        Operation(OpKind.UPSERT, key, {"id": key.id}) for key in keys
    ]


def admit_upserts(engine: Engine, tenant: str, ids: list[str], rtype: str = "thing") -> None:
    """``upserts_job`` admitted straight into the store (no API)."""
    job, operations = upserts_job(tenant, ids, rtype)
    with engine.begin() as conn:
        admit(conn, job, operations, utcnow(), pending_cap=Settings.max_pending_operations)


def queued_messages(broker: StubBroker) -> int:
    """Messages waiting in a stub broker's queues, delayed ones included."""
    return sum(queue.qsize() for queue in broker.queues.values())


def deliver_queued(broker: StubBroker) -> None:
    """Handle every message queued now, delayed ones as if their time had come, in this
    thread as a worker would; what they send meanwhile waits for the next call."""
    taken = [queue.get_nowait() for queue in broker.queues.values() for _ in range(queue.qsize())]
    for data in taken:
        message = dramatiq.Message.decode(data)
        broker.get_actor(message.actor_name).fn(*message.args, **message.kwargs)
