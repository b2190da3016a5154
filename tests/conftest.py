"""Fixtures: the service in both modes, real databases, real brokers, real workers.

``service`` is parametrised: every test that uses it runs against embedded mode
(SQLite file + in-process workers) and production mode (PostgreSQL + Redis + separate
``bulkapi worker`` processes). Tests isolate themselves by tenant, not by resetting state.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Connection
from werkzeug.test import TestResponse

from bulkapi.api.app import create_app
from bulkapi.config import Settings
from bulkapi.runtime import Runtime
from bulkapi.store.drain import PARTITION_LOCK_SPACE
from bulkapi.store.migrate import upgrade
from bulkapi.store.tenants import create_key
from tests.receivers import Receiver
from tests.support import (
    REDIS_URL,
    TERMINAL,
    TEST_SETTINGS,
    TEST_TYPES,
    WAIT_SECONDS,
    ManagedProcess,
    forget_namespace,
    fresh_postgres_database,
    require_redis,
    service_env,
    start_workers,
)
from tests.types_for_tests import EFFECT_LOG


def pytest_configure(config: pytest.Config) -> None:
    """One effect log per test run, shared with every process the tests start."""
    log_dir = Path(tempfile.mkdtemp(prefix="bulkapi-effects-"))
    os.environ[EFFECT_LOG] = str(log_dir / "effects.ndjson")


@dataclass
class InProcessApi:
    """One tenant's view of the API through Flask's test client (no sockets)."""

    client: FlaskClient
    key: str

    def request(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        headers = dict(kwargs.pop("headers", {}))
        if self.key and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.key}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("DELETE", path, **kwargs)

    def submit(self, operations: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        response = self.post("/v1/bulk", json={"operations": operations, **extra})
        assert response.status_code == 202, response.get_json()
        body: dict[str, Any] = response.get_json()
        return body

    def wait_job(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            body: dict[str, Any] = self.get(f"/v1/jobs/{job_id}?wait=10").get_json()
            if body["status"] in TERMINAL:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not terminal: {body}")

    def results(self, job_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = f"?limit=1000&cursor={cursor}" if cursor else "?limit=1000"
            page = self.get(f"/v1/jobs/{job_id}/results{query}").get_json()
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items


def lock_all_partitions(conn: Connection, partitions: int) -> None:
    """Take every partition's advisory lock in this session: drains then find them busy."""
    for partition in range(partitions):
        conn.execute(
            text("SELECT pg_advisory_lock(:space, :p)"),
            {"space": PARTITION_LOCK_SPACE, "p": partition},
        )
    conn.commit()


@dataclass
class Service:
    mode: str
    runtime: Runtime
    app: Flask
    workers: ManagedProcess | None = None

    def new_key(self, tenant: str | None = None) -> str:
        with self.runtime.engine.begin() as conn:
            _, secret = create_key(conn, tenant or f"tenant-{uuid.uuid4().hex[:10]}")
        return secret

    def api(self, tenant: str | None = None) -> InProcessApi:
        return InProcessApi(self.app.test_client(), self.new_key(tenant))

    def anonymous(self) -> InProcessApi:
        return InProcessApi(self.app.test_client(), "")

    @contextmanager
    def drains_paused(self) -> Iterator[None]:
        """Hold back every drain so accepted bulk work stays pending, deterministically.

        Embedded: the in-process workers are stopped and started again. Production: a
        session holds every partition's advisory lock, so drains find them busy.
        """
        if self.mode == "embedded":
            self.runtime.stop_embedded_worker()
            try:
                yield
            finally:
                self.runtime.start_embedded_worker()
            return
        with self.runtime.engine.connect() as conn:
            lock_all_partitions(conn, self.runtime.settings.partitions)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock_all()"))
                conn.commit()


def embedded_service(tmp: Path, **settings: Any) -> Iterator[Service]:
    """An embedded service (SQLite file in ``tmp``, in-process workers) with ``settings``."""
    settings = {**TEST_SETTINGS, **settings}
    runtime = Runtime(
        Settings(database_url=f"sqlite:///{tmp / 'embedded.db'}", sweep_interval=1.0, **settings)
    )
    upgrade(runtime.engine)
    runtime.start_embedded_worker()
    try:
        yield Service("embedded", runtime, create_app(runtime))
    finally:
        runtime.stop()


def production_service(
    tmp: Path, types_module: str = TEST_TYPES, **settings: Any
) -> Iterator[Service]:
    """PostgreSQL (a fresh database) + Redis (a fresh namespace) + 2 worker processes;
    ``settings`` go to the in-process API's settings, and to the workers as their
    ``BULKAPI_<NAME>`` variables."""
    require_redis()
    namespace = f"bulkapi-test-{uuid.uuid4().hex[:8]}"
    worker_settings = {f"BULKAPI_{name.upper()}": str(value) for name, value in settings.items()}
    with fresh_postgres_database() as url:
        runtime = Runtime(
            Settings(
                database_url=url,
                broker_url=REDIS_URL,
                broker_namespace=namespace,
                sweep_interval=1.0,
                types_module=types_module,
                **{**TEST_SETTINGS, **settings},
            )
        )
        upgrade(runtime.engine)
        workers = start_workers(
            service_env(url, REDIS_URL, namespace, BULKAPI_TYPES=types_module, **worker_settings),
            tmp,
        )
        try:
            yield Service("postgres", runtime, create_app(runtime), workers)
        finally:
            workers.stop()
            runtime.stop()
            forget_namespace(namespace)


def service_in(mode: str, tmp: Path, **settings: Any) -> Iterator[Service]:
    """An embedded or a production (``mode``: "postgres") service with ``settings``."""
    if mode == "embedded":
        yield from embedded_service(tmp, **{"types_module": TEST_TYPES, **settings})
    else:
        yield from production_service(tmp, **settings)


@pytest.fixture(scope="session", params=["embedded", "postgres"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    yield from service_in(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture
def api(service: Service) -> InProcessApi:
    """A fresh tenant with its own key, so tests never see each other's data."""
    return service.api()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1: 204 to every POST (``tests/receivers.py``)."""
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def gated() -> Iterator[Receiver]:
    """A receiver that holds every answer until the test sets its ``gate``."""
    started = Receiver(gate=threading.Event()).start()
    yield started
    started.stop()


@pytest.fixture
def dripping() -> Iterator[Receiver]:
    """A receiver that never answers, sending the start of an answer a byte at a time."""
    started = Receiver(drip=True).start()
    yield started
    started.stop()
