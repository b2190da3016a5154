"""Helpers for the integration tier: the installed commands, run as a user runs them.

``tests.support`` starts ``python -m bulkapi.cli`` with the repository as working
directory; the tests here also need the installed ``bulkapi`` and ``gunicorn`` scripts,
another working directory, and an environment with no ``BULKAPI_*`` variable at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bulkapi.store.database import make_engine
from bulkapi.store.migrate import upgrade
from tests.support import (
    ROOT,
    WAIT_SECONDS,
    ManagedProcess,
    forget_namespace,
    free_port,
    fresh_postgres_database,
    require_redis,
    wait_ready,
)

#: The console scripts installed beside the interpreter running the tests.
BIN = Path(sys.executable).parent
BULKAPI = str(BIN / "bulkapi")
GUNICORN = str(BIN / "gunicorn")


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment with every ``BULKAPI_*`` variable removed, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKAPI_")}
    env.update(extra)
    return env


def run_cli(
    args: list[str], env: Mapping[str, str], cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run ``bulkapi ARGS`` to completion; the caller checks the exit code."""
    return subprocess.run(
        [BULKAPI, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )


def create_key(env: Mapping[str, str], tenant: str, cwd: Path = ROOT) -> str:
    out = run_cli(["keys", "create", "--tenant", tenant], env, cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


class CwdProcess(ManagedProcess):
    """A ``ManagedProcess`` started in a chosen working directory."""

    def __init__(
        self, argv: list[str], env: Mapping[str, str], log_path: Path, cwd: Path = ROOT
    ) -> None:
        super().__init__(argv, env, log_path, cwd)

    def terminate(self) -> int:
        """SIGTERM the process itself (as a supervisor would) and wait for its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.argv} ignored SIGTERM: {self.log()}") from None


def serve(
    env: Mapping[str, str], log_path: Path, cwd: Path = ROOT, *extra: str
) -> tuple[CwdProcess, str]:
    """Start ``bulkapi serve`` on a free port and wait until /readyz answers 200.

    The caller owns the process: use it as a context manager or stop it.
    """
    port = free_port()
    argv = [BULKAPI, "serve", "--host", "127.0.0.1", "--port", str(port), *extra]
    proc = CwdProcess(argv, env, log_path, cwd).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base)
    except BaseException:
        proc.stop()
        raise
    return proc, base


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated engine on a fresh SQLite file, then on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
        upgrade(engine)
        yield engine
        engine.dispose()
        return
    with fresh_postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (fails, never skips, if PostgreSQL is down)."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A broker namespace of one test's own; its Redis keys are deleted afterwards."""
    require_redis()
    namespace = f"bulkapi-it-{uuid.uuid4().hex[:8]}"
    yield namespace
    forget_namespace(namespace)
