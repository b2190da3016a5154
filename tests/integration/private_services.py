"""Private Redis and PostgreSQL servers that a fault test may kill and restart at will.

The machine's own services (Redis on 6379, PostgreSQL on 5432) are shared by the whole
suite and are never touched: each private server listens on a free port of 127.0.0.1,
keeps its files in a temporary directory, and is stopped by the test that started it,
by its own process id (or its own data directory for ``pg_ctl``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import redis

from tests.support import WAIT_SECONDS, free_port, wait_until


class PrivateRedis:
    """A throw-away ``redis-server`` without persistence: a kill loses all its data."""

    def __init__(self, workdir: Path, bind: str = "127.0.0.1") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError(
                "redis-server is not on PATH: the Redis fault test needs it "
                "(apt-get install redis-server)"
            )
        self.binary = binary
        self.workdir = workdir
        #: Addresses to listen on (space-separated); the URL names the first.
        self.bind = bind
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{self.bind.split()[0]}:{self.port}/0"

    def start(self) -> None:
        """Start an empty server on this object's port and wait until it answers PING."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        log = (self.workdir / f"redis-{self.starts}.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                *self.bind.split(),
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        client = redis.Redis.from_url(self.url, socket_timeout=2)

        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log()}")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_until(answers, timeout=30, what="private redis-server to answer PING")
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server: everything it held (queued messages included) is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(WAIT_SECONDS)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.workdir.glob("redis-*.log"))
        )


@contextmanager
def private_redis(workdir: Path, bind: str = "127.0.0.1") -> Iterator[PrivateRedis]:
    server = PrivateRedis(workdir, bind)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def postgres_bindir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``; a clear failure (never a skip) without."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise AssertionError(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            "the PostgreSQL restart test needs initdb and pg_ctl (apt-get install postgresql)"
        )
    if shutil.which("runuser") is None:
        raise AssertionError("runuser is not on PATH: needed to run PostgreSQL as 'postgres'")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise AssertionError("no 'postgres' OS user to run a private PostgreSQL as") from None
    return Path(found[-1]).parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (trust auth) in a temporary directory.

    ``runuser -u postgres`` runs initdb and pg_ctl: the server refuses to run as root.
    ``listen``: addresses to listen on besides 127.0.0.1 (a test's own bridge, say),
    each trusted from its /24.
    """

    def __init__(self, listen: tuple[str, ...] = ()) -> None:
        self.listen = listen
        self.bindir = postgres_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="bulkapi-pg-"))
        self.data = self.base / "data"
        self.logfile = self.base / "server.log"
        self.port = free_port()
        owner = pwd.getpwnam("postgres")
        os.chown(self.base, owner.pw_uid, owner.pw_gid)
        os.chmod(self.base, 0o700)

    def _pg(self, tool: str, *args: str, timeout: float = WAIT_SECONDS) -> None:
        argv = ["runuser", "-u", "postgres", "--", str(self.bindir / tool), *args]
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.base
        )
        if out.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} failed ({out.returncode}): {out.stdout}{out.stderr}\n"
                f"server log:\n{self.log()}"
            )

    def _pg_ctl(self, action: str, *args: str) -> None:
        addresses = ",".join(("127.0.0.1", *self.listen))
        options = f"-p {self.port} -k {self.base} -c listen_addresses={addresses}"
        self._pg(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.logfile), "-w",
            "-t", "60", *args, action,
        )  # fmt: skip

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def initdb_and_start(self) -> None:
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        with (self.data / "pg_hba.conf").open("a") as hba:
            for address in self.listen:
                subnet = address.rsplit(".", 1)[0] + ".0/24"
                hba.write(f"host all all {subnet} trust\n")
        self._pg_ctl("start")

    def create_database(self, name: str) -> str:
        """Create ``name``; return its SQLAlchemy URL."""
        with psycopg.connect(self.admin_url(), autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.admin_url(name).replace("postgresql://", "postgresql+psycopg://", 1)

    def restart(self) -> None:
        """Fast restart: active transactions are rolled back, every connection is cut."""
        self._pg_ctl("restart", "-m", "fast")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        try:
            if self.postmaster_pid() is not None:
                self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        except (AssertionError, subprocess.TimeoutExpired):
            pid = self.postmaster_pid()  # our own cluster's postmaster, by its pid file
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                    time.sleep(1)
                except ProcessLookupError:
                    pass
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@contextmanager
def private_postgres(listen: tuple[str, ...] = ()) -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres(listen)
    try:
        cluster.initdb_and_start()
        yield cluster
    finally:
        cluster.stop()
