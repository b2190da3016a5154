"""`bulkapi serve`: gunicorn around the app, workers inside when embedded.

``Worker`` is gunicorn's gthread worker with what an API that answers every request
with a problem needs on top; ``gunicorn -k bulkapi.server.Worker wsgi:app`` uses it too.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from bulkapi.api.app import SECURITY_HEADERS, create_app
from bulkapi.api.deadlines import Alarm, cut_off_reads
from bulkapi.api.problems import PROBLEM_TYPE, http_code, problem_body
from bulkapi.config import Settings
from bulkapi.runtime import Runtime, freeze_startup_objects

#: Seconds gunicorn gives in-flight requests (and embedded batches) at SIGTERM.
GRACEFUL_TIMEOUT = 30
#: Seconds an idle keep-alive connection stays open for its next request.
KEEPALIVE = 5
#: Longest detail quoted from gunicorn's description of a malformed request.
_MAX_DETAIL = 200
#: What a send fails with once it has made no progress for ``SO_SNDTIMEO``.
_SEND_TIMED_OUT = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})

logger = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _stop_runtime(server: Any, worker: Any) -> None:
    runtime = getattr(worker.app, "runtime", None)
    if runtime is not None:
        runtime.stop()


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, host: str, port: int) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        self.options = {
            "bind": f"{host}:{port}",
            "workers": settings.serving_processes,
            "worker_class": Worker,
            "threads": settings.web_threads,
            "timeout": 120,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "keepalive": KEEPALIVE,
            # gunicorn's defaults, written down: over them, 414 and 431 problems.
            "limit_request_line": 4094,
            "limit_request_fields": 100,
            "limit_request_field_size": 8190,
            # One fixed path per user by default: two servers on a host would share it,
            # and the first to stop would remove it for the other. Nothing here uses it.
            "control_socket_disable": True,
            "worker_exit": _stop_runtime,
            "accesslog": None,
        }
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        """Runs in each worker process after the fork, so engines and threads are its own."""
        self.runtime = Runtime(self.settings)
        if self.settings.embedded:
            self.runtime.start_embedded_worker()
        app = create_app(self.runtime)
        freeze_startup_objects()
        return app


class _Exchange:
    """One request on a connection, as the worker thread serving it sees it."""

    __slots__ = ("alarm", "answered", "request")

    def __init__(self, alarm: Alarm) -> None:
        #: Cuts the connection off if the request line and headers take too long.
        self.alarm = alarm
        #: gunicorn's request, once its headers are in.
        self.request: Any = None
        #: Whether the application or an error answer has taken the request.
        self.answered = False


class _TrackedInput:
    """``wsgi.input`` that remembers whether the application read the body to its end."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self._body = environ["wsgi.input"]
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        length = environ.get("CONTENT_LENGTH")
        #: Bytes still unread; None for a chunked body, which ends with an empty read.
        self._left: int | None = int(length) if length else (None if chunked else 0)
        self.complete = self._left == 0

    def read(self, size: int | None = None) -> bytes:
        return self._seen(self._body.read(size), size)

    def readline(self, size: int | None = None) -> bytes:
        return self._seen(self._body.readline(size), size)

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _seen(self, data: bytes, size: int | None) -> bytes:
        if self._left is None:
            self.complete = self.complete or (not data and size != 0)
        else:
            self._left -= len(data)
            self.complete = self._left <= 0
        return data


class _StatusLine:
    """Stands in for the client socket while gunicorn writes its HTML error page, and
    keeps only the status it chose."""

    status = 500
    reason = "Internal Server Error"

    def gettimeout(self) -> float:
        return 0.0

    def sendall(self, data: bytes) -> None:
        try:  # "HTTP/1.1 431 Request Header Fields Too Large\r\n..."
            _, status, self.reason = data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            self.status = int(status)
        except ValueError:
            pass


def _write_problem(sock: Any, status: int, reason: str, detail: str) -> None:
    """A problem answer written straight to the socket, and the connection's last."""
    body = problem_body(status, http_code(status), reason, detail)
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Connection: close",
        f"Content-Type: {PROBLEM_TYPE}",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
    ]
    with contextlib.suppress(OSError):  # the client is gone
        util.write_nonblock(sock, "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)


def _limit_sends(sock: socket.socket, seconds: float, buffer: int) -> None:
    """Make a send that moves no byte for ``seconds`` fail instead of blocking for ever,
    and let the kernel hold at most about ``buffer`` bytes of answers (0: its choice).

    ``SO_SNDTIMEO`` rather than ``settimeout``: it bounds sends only, leaves reads alone
    (their deadlines are ``api/deadlines.py``'s), and counts time without progress, so
    a slow reader that keeps reading is never cut. The buffer bounds what a reader that
    stops reading costs: on loopback Linux would otherwise buffer about 4 MB for it, and
    the stream would spend a burst of CPU producing that much before it stalls.
    """
    whole = int(seconds)
    timeval = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
    with contextlib.suppress(OSError):  # closed already
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        if buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)


def _abort(sock: socket.socket) -> None:
    """Make the coming close a reset: what the peer did not take is dropped at once,
    not kept in kernel memory and retried, and gunicorn's graceful close (which waits
    for the peer to read the end of the answer) returns at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("@ii", 1, 0))
        socket.socket.shutdown(sock, socket.SHUT_RD)


class Worker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, changed in four ways:

    - the request line and headers must arrive within ``BULKAPI_HEADER_TIMEOUT``, or the
      connection gets a 408 and is closed (gthread waits for them without a limit once a
      first byte came, holding a thread);
    - gunicorn's own error answers (malformed request line or headers, URI or headers
      too long) are problems (``application/problem+json``), not HTML pages;
    - an answer to a request whose body the application did not read to its end (413,
      408, a short body) says ``Connection: close``, and the connection closes: gunicorn
      would announce keep-alive, then spend up to 5 s of the thread discarding the rest
      of the body, and drop the connection if it takes longer;
    - a client that takes no byte of an answer for ``BULKAPI_SEND_TIMEOUT`` (a reader that
      stopped reading a result stream, say) is cut off with a reset, and its thread freed:
      gthread would wait in ``sendall`` for as long as the client keeps the socket open.
    """

    header_timeout: float = Settings.header_timeout
    send_timeout: float = Settings.send_timeout
    send_buffer: int = Settings.send_buffer
    wsgi: WsgiApp

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        runtime = getattr(self.wsgi, "extensions", {}).get("bulkapi")
        settings = runtime.settings if isinstance(runtime, Runtime) else Settings.from_env()
        self.header_timeout = settings.header_timeout
        self.send_timeout = settings.send_timeout
        self.send_buffer = settings.send_buffer
        self.wsgi = self._closing_after_unread_bodies(self.wsgi)

    def _exchange(self) -> _Exchange | None:
        return getattr(self._local, "exchange", None)

    def handle(self, conn: Any) -> Any:
        _limit_sends(conn.sock, self.send_timeout, self.send_buffer)
        exchange = _Exchange(cut_off_reads(conn.sock, self.header_timeout))
        self._local.exchange = exchange
        try:
            result = super().handle(conn)
        finally:
            self._local.exchange = None
            in_time = exchange.alarm.cancel()
        if in_time or exchange.answered:
            return result
        detail = f"The request line and headers did not arrive within {self.header_timeout:g} s."
        _write_problem(conn.sock, 408, "Request Timeout", detail)
        return False

    def handle_request(self, req: Any, conn: Any) -> Any:
        exchange = self._exchange()
        if exchange is not None:
            exchange.answered, exchange.request = True, req
            if not exchange.alarm.cancel():
                req.force_close()  # the headers came in as time ran out: the reads are cut
        try:
            return super().handle_request(req, conn)
        except OSError as error:
            if error.errno not in _SEND_TIMED_OUT:
                raise
            logger.warning(
                "cut off %s: it took no part of the answer for %g s", conn.client, self.send_timeout
            )
            _abort(conn.sock)
            raise StopIteration from None  # gthread's way to end a connection quietly

    def handle_http2(self, conn: Any) -> Any:
        exchange = self._exchange()
        if exchange is not None:  # a long-lived connection of many streams: no header limit
            exchange.answered = True
            exchange.alarm.cancel()
        return super().handle_http2(conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        exchange = self._exchange()
        if exchange is not None:
            exchange.answered = True
        chosen = _StatusLine()
        super().handle_error(req, chosen, addr, exc)  # logs it and chooses the status
        detail = str(exc)[:_MAX_DETAIL] if 400 <= chosen.status < 500 else chosen.reason
        _write_problem(client, chosen.status, chosen.reason, detail or chosen.reason)

    def _closing_after_unread_bodies(self, app: WsgiApp) -> WsgiApp:
        def closing(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            body = _TrackedInput(environ)
            environ["wsgi.input"] = body
            exchange = self._exchange()

            def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                if not body.complete and exchange is not None and exchange.request is not None:
                    exchange.request.force_close()
                return start_response(status, headers, exc_info)

            return app(environ, start)

        return closing
