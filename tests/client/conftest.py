"""Real servers for the client's tests, on both modes: events and streamed bodies need
real HTTP, not Flask's test client.

``served`` starts ``bulkapi serve`` once per session and mode: embedded (SQLite, workers
in the server) and production (PostgreSQL, Redis and a ``bulkapi worker`` group).
``idle`` is the same without workers (embedded: no worker threads), so its jobs stay
queued for as long as a test needs. Tests isolate themselves by tenant: ``new_key()``
makes a fresh one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import (
    REDIS_URL,
    ManagedProcess,
    forget_namespace,
    fresh_postgres_database,
    migrated_with_key,
    require_redis,
    service_env,
    start_server,
    start_workers,
)


@dataclass
class Served:
    """A running ``bulkapi serve`` and the database behind it."""

    mode: str
    base_url: str
    database_url: str
    env: dict[str, str]

    def new_key(self) -> str:
        """A key of a tenant of its own."""
        return migrated_with_key(self.database_url, "client")


def _embedded(tmp: Path, **settings: str) -> Iterator[Served]:
    url = f"sqlite:///{tmp / 'client.db'}"
    env = service_env(url, None, f"bulkapi-client-{uuid.uuid4().hex[:8]}", **settings)
    migrated_with_key(url, "setup")  # the schema before the server, so keys can be made
    server, base = start_server(env, tmp)
    try:
        yield Served("embedded", base, url, env)
    finally:
        server.stop()


def _production(tmp: Path, workers: bool, **settings: str) -> Iterator[Served]:
    require_redis()
    namespace = f"bulkapi-client-{uuid.uuid4().hex[:8]}"
    with fresh_postgres_database() as url:
        env = service_env(url, REDIS_URL, namespace, **settings)
        migrated_with_key(url, "setup")
        processes: list[ManagedProcess] = []
        try:
            if workers:
                processes.append(start_workers(env, tmp))
            server, base = start_server(env, tmp)
            processes.append(server)
            yield Served("postgres", base, url, env)
        finally:
            for process in processes:
                process.stop()
            forget_namespace(namespace)


def serve(mode: str, tmp: Path, workers: bool = True, **settings: str) -> Iterator[Served]:
    """A server of ``mode`` ("embedded" or "postgres") with these ``BULKAPI_*`` settings;
    without ``workers`` nothing is ever applied."""
    if mode == "embedded":
        threads = {} if workers else {"BULKAPI_EMBEDDED_WORKER_THREADS": "0"}
        return _embedded(tmp, **threads, **settings)
    return _production(tmp, workers, **settings)


@pytest.fixture(scope="session", params=["embedded", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    yield from serve(request.param, tmp_path_factory.mktemp(f"client-{request.param}"))


@pytest.fixture(scope="session", params=["embedded", "postgres"])
def idle(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp(f"idle-{request.param}")
    yield from serve(request.param, tmp, workers=False)
