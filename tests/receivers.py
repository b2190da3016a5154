"""Webhook receivers for tests: real HTTP servers on 127.0.0.1 that record every POST.

A receiver answers 500 to its first ``failures`` requests and 204 to the rest. With a
``gate`` it holds every answer until the test opens the gate; with ``drip`` it never
answers, sending the start of an answer one byte at a time until the client goes away.
``stop`` opens the gate and ends every drip, so no handler outlives its test.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support import WAIT_SECONDS

#: Seconds between two bytes of a dripping answer.
DRIP_INTERVAL = 0.05


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    failures: int = 0
    gate: threading.Event | None = None
    drip: bool = False
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    failing = len(receiver.requests) <= receiver.failures
                if receiver.drip:
                    self._drip()
                    return
                if receiver.gate is not None:
                    receiver.gate.wait(WAIT_SECONDS)
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _drip(self) -> None:
                """The status line, then one header byte at a time, until the client
                hangs up (or the test ends)."""
                self.close_connection = True
                try:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                    while not receiver.stopping.wait(DRIP_INTERVAL):
                        self.wfile.write(b"a")
                        self.wfile.flush()
                except OSError:
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.gate is not None:
            self.gate.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
