"""A fleet on one machine: PostgreSQL and Redis of the test's own on the bridge address,
and per host (a network namespace) one ``bulkapi serve`` and one ``bulkapi worker``.

The session limits are set short here, so that a fault's takeover bound (derived from
them in ``takeover_bound``) is a few seconds and a whole fault test fits in CI; the
same formula with the defaults gives the bound docs/guarantees.md states.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bulkapi.store.drain import PARTITION_LOCK_SPACE
from tests.fleet.network import Host, Network, network
from tests.integration.private_services import PrivatePostgres, PrivateRedis, private_postgres
from tests.support import (
    ManagedProcess,
    bulkapi_argv,
    migrated_with_key,
    service_env,
    wait_ready,
)

#: Session limits of every fleet process (seconds): see ``takeover_bound``.
IDLE_IN_TRANSACTION = 3.0
DEAD_PEER = 4.0
LOCK_WAIT = 2.0
SWEEP_INTERVAL = 1.0
#: Port of every host's API (each host has its own address).
API_PORT = 8000
HOSTS = ("h1", "h2", "h3")
#: Looks for a moment the victim holds a partition lock before a fault test gives up.
FAULT_LOOKS = 3000
#: What PostgreSQL logs when it ends a session for one of the limits (or a dead peer).
_SESSION_ENDINGS = (
    "idle-in-transaction timeout",
    "canceling statement due to lock timeout",
    "Connection timed out",
    "could not receive data from client",
    "could not send data to client",
)


def takeover_bound(idle_in_transaction: float, dead_peer: float, sweep: float) -> float:
    """Seconds from a host's freeze or disappearance until another worker drains its
    partition: the server ends the host's transaction (idle, or stuck sending to it),
    which frees the partition lock, and the next sweep sends a wake-up. The keepalive
    probes (``DEAD_PEER`` rounded to whole seconds) may add a second."""
    return max(idle_in_transaction, dead_peer + 1) + sweep


#: The bound of this test's settings.
TAKEOVER_BOUND = takeover_bound(IDLE_IN_TRANSACTION, DEAD_PEER, SWEEP_INTERVAL)


@dataclass
class FleetHost:
    host: Host
    api: ManagedProcess
    worker: ManagedProcess

    @property
    def base_url(self) -> str:
        return f"http://{self.host.address}:{API_PORT}"

    def drain_processes(self) -> list[int]:
        """The Dramatiq worker processes (supervisor → Dramatiq → worker)."""
        return self.worker.grandchildren()


@dataclass
class Fleet:
    net: Network
    postgres: PrivatePostgres
    redis: PrivateRedis
    database_url: str
    key: str
    tmp: Path
    hosts: dict[str, FleetHost] = field(default_factory=dict)

    @property
    def admin_dsn(self) -> str:
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)

    def drain_lock_holders(self) -> dict[str, int]:
        """Per host address, how many drain partition locks its sessions hold now."""
        with psycopg.connect(self.admin_dsn, connect_timeout=10, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT host(a.client_addr), count(*) FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.granted "
                "GROUP BY 1",
                (PARTITION_LOCK_SPACE,),
            ).fetchall()
        return {address: count for address, count in rows if address}

    def holds_partition(self, host: FleetHost) -> bool:
        return self.drain_lock_holders().get(host.host.address, 0) > 0

    def describe(self) -> str:
        """What holds things up, for a failure message: pending operations per partition,
        and the sessions in a transaction (host, state, for how long, doing what)."""
        with psycopg.connect(self.admin_dsn, connect_timeout=10, autocommit=True) as conn:
            pending = conn.execute(
                "SELECT partition, count(*) FROM operations WHERE status = 'pending' "
                "GROUP BY 1 ORDER BY 1"
            ).fetchall()
            busy = conn.execute(
                "SELECT host(client_addr), state, wait_event_type, "
                "round(extract(epoch FROM now() - xact_start)::numeric, 1), left(query, 60) "
                "FROM pg_stat_activity WHERE xact_start IS NOT NULL AND client_addr IS NOT NULL"
            ).fetchall()
        return f"pending per partition {pending}; sessions in a transaction {busy}"

    def sessions(self) -> dict[str, int]:
        """PostgreSQL sessions per host name, now."""
        with psycopg.connect(self.admin_dsn, connect_timeout=10, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT host(client_addr), count(*) FROM pg_stat_activity "
                "WHERE client_addr IS NOT NULL GROUP BY 1"
            ).fetchall()
        names = {host.host.address: name for name, host in self.hosts.items()}
        return {names[address]: count for address, count in rows if address in names}

    def sessions_of(self, host: FleetHost) -> int:
        return self.sessions().get(host.host.name, 0)

    def postgres_events(self) -> dict[str, int]:
        """How the server ended sessions so far, from its log (its reasons, counted)."""
        log = (self.postgres.logfile).read_text(errors="replace")
        return {reason: log.count(reason) for reason in _SESSION_ENDINGS if reason in log}

    def freeze_holding_a_partition(self, host: FleetHost) -> list[int]:
        """SIGSTOP the host's drain processes at a moment they hold a partition lock;
        the stopped pids."""
        stopped: list[int] = []

        def freeze() -> None:
            stopped[:] = host.drain_processes()
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)

        def resume() -> None:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)

        self._fault_while_holding(host, freeze, resume, "freeze")
        return stopped

    def cut_holding_a_partition(self, host: FleetHost) -> None:
        """Cut the host's link at a moment its worker holds a partition lock."""
        self._fault_while_holding(
            host, lambda: self.net.cut(host.host), lambda: self.net.restore(host.host), "cut"
        )

    def _fault_while_holding(
        self,
        host: FleetHost,
        inject: Callable[[], None],
        undo: Callable[[], None],
        what: str,
    ) -> None:
        """Inject a fault at a moment the host holds a partition lock.

        Look first and inject only when the host was just seen holding one, look again
        and undo to try later if it let go in between. Injecting blindly kept a cut link
        down half of the time while searching, and once in CI the host, its connections
        backing off their retransmits, never held a lock in 2,000 tries.
        """
        for _ in range(FAULT_LOOKS):
            if self.holds_partition(host):
                inject()
                if self.holds_partition(host):
                    return
                undo()
            time.sleep(0.005)
        raise AssertionError(
            f"{host.host.name} never held a partition lock to {what} it on; locks per "
            f"host {self.drain_lock_holders()}; {self.describe()}; its worker's log ends "
            f"{host.worker.log()[-2000:]!r}"
        )

    def kill_host(self, host: FleetHost) -> None:
        """Every process of the host dies at once, and its link goes down for good."""
        self.net.cut(host.host)
        host.worker.kill()
        host.api.kill()


def start_host(fleet: Fleet, env: dict[str, str], host: Host, stack: ExitStack) -> FleetHost:
    api = ManagedProcess(
        host.argv(*bulkapi_argv("serve", "--host", host.address, "--port", str(API_PORT))),
        env,
        fleet.tmp / f"{host.name}-api.log",
    )
    worker = ManagedProcess(
        host.argv(*bulkapi_argv("worker", "--processes", "1", "--threads", "2")),
        env,
        fleet.tmp / f"{host.name}-worker.log",
    )
    stack.callback(worker.stop)
    stack.callback(api.stop)
    api.start()
    worker.start()
    running = FleetHost(host, api, worker)
    wait_ready(api, running.base_url)
    return running


@contextmanager
def fleet(tmp: Path, per_host: Mapping[str, Mapping[str, str]] | None = None) -> Iterator[Fleet]:
    """Three hosts, each with an API and a worker, on a private PostgreSQL and Redis.

    ``per_host`` adds settings for one host's processes (by host name).
    """
    with ExitStack() as stack:
        net = stack.enter_context(network(*HOSTS))
        postgres = stack.enter_context(private_postgres(listen=(net.gateway,)))
        redis_server = PrivateRedis(tmp, bind=f"{net.gateway} 127.0.0.1")
        redis_server.start()
        stack.callback(redis_server.stop)
        local_url = postgres.create_database("bulkapi")
        key = migrated_with_key(local_url, "fleet")
        bridge_url = local_url.replace("127.0.0.1", net.gateway, 1)
        env = service_env(
            bridge_url,
            redis_server.url,
            "bulkapi-fleet",  # the Redis is the test's own
            BULKAPI_SWEEP_INTERVAL=str(SWEEP_INTERVAL),
            BULKAPI_DRAIN_BUDGET="0.5",
            BULKAPI_BATCH_SIZE="50",
            BULKAPI_PARTITIONS="16",
            BULKAPI_DRAIN_GROUP="2",  # 8 blocks for 6 threads, as operations.md advises
            BULKAPI_WEB_PROCESSES="1",
            BULKAPI_REDIS_TIMEOUT="2",
            BULKAPI_RATE_LIMIT="",
            BULKAPI_DB_IDLE_IN_TRANSACTION_TIMEOUT=str(IDLE_IN_TRANSACTION),
            BULKAPI_DB_DEAD_PEER_TIMEOUT=str(DEAD_PEER),
            BULKAPI_DB_LOCK_TIMEOUT=str(LOCK_WAIT),
            BULKAPI_DB_CONNECT_TIMEOUT="2",
        )
        running = Fleet(net, postgres, redis_server, local_url, key, tmp)
        for name, host in net.hosts.items():
            extra = (per_host or {}).get(name, {})
            running.hosts[name] = start_host(running, {**env, **extra}, host, stack)
        stack.callback(_resume_all, running)  # first at teardown: stopped ones can stop
        yield running


def _resume_all(running: Fleet) -> None:
    for fleet_host in running.hosts.values():
        for pid in fleet_host.drain_processes():
            with suppress(ProcessLookupError):  # it may have exited since
                os.kill(pid, signal.SIGCONT)
