"""Readers that never read do not take the server: a real `bulkapi serve` (gunicorn,
``server.Worker``) in both modes, raw sockets that ask for a large job's results as
NDJSON, or for a job's events, and then read nothing more.

Each stream holds a server thread while it is open, so streams need one of the process's
wait slots (a tenant gets half of them); a stream whose reader has stopped reading is cut
off after ``BULKAPI_SEND_TIMEOUT``, which frees its thread and its slot.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.api.test_http_server import read_answer
from tests.support import (
    REDIS_URL,
    WAIT_SECONDS,
    ManagedProcess,
    create_api_key,
    database_url,
    migrated_with_key,
    service_env,
    start_server,
    wait_until,
)

#: Stalled readers of each kind, as the availability probe opened them.
STALLED = 40
#: Seconds without progress before the server cuts a reader off (short for the test).
SEND_TIMEOUT = 10
#: Operations of the large job, with long ids: its NDJSON results (≈ 7 MB) outgrow what
#: the kernel buffers for a reader that does not read (``BULKAPI_SEND_BUFFER``, twice
#: 256 KiB; even without it, about 4 MB on loopback).
OPERATIONS = 40_000
LONG_ID = "x" * 100
#: A reader's receive buffer: as small as the kernel allows.
RECEIVE_BUFFER = 4096
#: Wait slots per API process (the default) and the share one tenant may hold.
SLOTS = 8
PER_TENANT = SLOTS // 2


@dataclass
class Server:
    base_url: str
    env: dict[str, str]
    process: ManagedProcess
    processes: int

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.base_url.removeprefix("http://").split(":")
        return host, int(port)

    def tenant_key(self, name: str) -> str:
        return create_api_key(self.env, f"{name}-{uuid.uuid4().hex[:6]}")


@contextmanager
def _server(mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """`bulkapi serve` with nothing draining, so jobs stay open while the test looks."""
    kind = "sqlite" if mode == "embedded" else "postgres"
    with database_url(kind, tmp_path) as url:
        settings = {"BULKAPI_SEND_TIMEOUT": str(SEND_TIMEOUT)}
        if mode == "embedded":
            settings["BULKAPI_EMBEDDED_WORKER_THREADS"] = "0"
            env = service_env(url, None, f"bulkapi-it-{uuid.uuid4().hex[:8]}", **settings)
        else:
            namespace = request.getfixturevalue("redis_namespace")
            env = service_env(url, REDIS_URL, namespace, **settings)
            migrated_with_key(url, "schema")  # production serve does not migrate
        process, base_url = start_server(env, tmp_path)
        try:
            yield Server(base_url, env, process, 1 if mode == "embedded" else 2)
        finally:
            process.stop()


def _stalled(server: Server, path: str, token: str, accept: str) -> socket.socket:
    """A connection that sends one request and then reads (almost) nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.settimeout(WAIT_SECONDS)
    sock.connect(server.address)
    host, port = server.address
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Accept: {accept}\r\n\r\n".encode()
    )
    return sock


def _rest(sock: socket.socket) -> tuple[int, bool]:
    """Bytes left to read on a connection and whether it ended with a reset."""
    total = 0
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            return total, True
        if not chunk:
            return total, False
        total += len(chunk)


def _timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


@pytest.mark.parametrize("mode", ["embedded", "postgres"])
def test_stalled_readers_leave_the_server_answering_and_are_cut_off(
    mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with _server(mode, tmp_path, request) as server, ExitStack() as sockets:
        reader, other, follower = (server.tenant_key(name) for name in ("reader", "other", "sse"))
        auth = {"Authorization": f"Bearer {reader}"}
        operations = [
            {"op": "upsert", "type": "doc", "id": f"{LONG_ID}{n}", "data": {}}
            for n in range(OPERATIONS)
        ]
        submitted = requests.post(
            f"{server.base_url}/v1/bulk",
            json={"operations": operations},
            headers=auth,
            timeout=WAIT_SECONDS,
        )
        assert submitted.status_code == 202, submitted.text
        job, token = submitted.json()["id"], submitted.json()["status_token"]
        watched = requests.post(
            f"{server.base_url}/v1/bulk",
            json={"operations": operations[:1]},
            headers={"Authorization": f"Bearer {follower}"},
            timeout=WAIT_SECONDS,
        ).json()["id"]

        # The job's read-only token is all a reader needs.
        results = [
            sockets.enter_context(
                _stalled(server, f"/v1/jobs/{job}/results", token, "application/x-ndjson")
            )
            for _ in range(STALLED)
        ]
        events = [
            sockets.enter_context(
                _stalled(server, f"/v1/jobs/{watched}/events", follower, "text/event-stream")
            )
            for _ in range(STALLED)
        ]
        heads = [read_answer(sock) for sock in results]  # a stream's body is not read
        answers = [read_answer(sock) for sock in events]
        assert [a.status for a in answers] == [200] * STALLED, [
            (a.status, a.body[:200]) for a in answers if a.status != 200
        ]

        # While they are held, everyone else is answered (twice: the figures printed for
        # the record show the first answers, while the streams still fill the socket
        # buffers, and the next ones).
        other_auth = {"Authorization": f"Bearer {other}"}
        for attempt in ("first", "then"):
            health, health_seconds = _timed(
                lambda: requests.get(f"{server.base_url}/healthz", timeout=WAIT_SECONDS)
            )
            assert health.status_code == 200
            written, write_seconds = _timed(
                lambda: requests.put(
                    f"{server.base_url}/v1/resources/doc/elsewhere",
                    json={"n": 1},
                    headers=other_auth,
                    timeout=WAIT_SECONDS,
                )
            )
            assert written.status_code in (200, 201), written.text
            listed, list_seconds = _timed(
                lambda: requests.get(
                    f"{server.base_url}/v1/jobs", headers=other_auth, timeout=WAIT_SECONDS
                )
            )
            assert listed.status_code == 200, listed.text
            print(
                f"\n[{mode}, {attempt}] {STALLED} NDJSON + {STALLED} SSE stalled readers: "
                f"/healthz {health_seconds * 1000:.0f} ms, PUT {write_seconds * 1000:.0f} ms, "
                f"GET /v1/jobs {list_seconds * 1000:.0f} ms"
            )

        # The tenant streams in at most its share of each process's slots; beyond, 429.
        streaming = [sock for sock, head in zip(results, heads, strict=True) if head.status == 200]
        refused = [head for head in heads if head.status == 429]
        assert 1 <= len(streaming) <= PER_TENANT * server.processes, len(streaming)
        assert len(streaming) + len(refused) == STALLED
        for head in refused:
            assert head.headers["retry-after"].isdigit()
            head.problem(429, "too_many_streams")

        # A reader that takes nothing for the send timeout is cut off (reset), its answer
        # unfinished; that gives its slot back.
        wait_until(
            lambda: server.process.log().count("it took no part of the answer") >= len(streaming),
            what="the stalled result streams to be cut off",
        )
        complete = requests.get(
            f"{server.base_url}/v1/jobs/{job}/results",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/x-ndjson"},
            timeout=WAIT_SECONDS,
        )
        assert complete.status_code == 200, complete.text
        assert len(complete.content.splitlines()) == OPERATIONS
        for sock in streaming:
            left, reset = _rest(sock)
            assert reset or left < len(complete.content), (left, reset)
