"""`bulkapi serve` over real sockets: body limits whatever the framing, time limits that
free the threads, connections closed when a body is refused, gunicorn's own errors as
problems.

The server runs with two request threads and two-second header and body time limits, so
a few stalled clients are more than it has threads. No test measures time: the socket
timeouts are hang guards only.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import requests

from bulkapi.config import Settings
from bulkapi.server import Server
from tests.support import WAIT_SECONDS, RealServer, embedded_server, row_count

MAX_BODY = 20_000
#: Sync writes read a document's body up to several times this (escaping, indentation)
#: before measuring it re-serialized: 75 kB and more is past that allowance.
MAX_DOCUMENT = 10_000
THREADS = 2
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    tmp: Path = tmp_path_factory.mktemp("http-server")
    with embedded_server(
        tmp,
        BULKAPI_MAX_BODY_BYTES=str(MAX_BODY),
        BULKAPI_MAX_DOCUMENT_BYTES=str(MAX_DOCUMENT),
        BULKAPI_BODY_TIMEOUT="2",
        BULKAPI_HEADER_TIMEOUT="2",
        BULKAPI_WEB_THREADS=str(THREADS),
    ) as running:
        yield running


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self, status: int, code: str) -> dict[str, object]:
        """The answer is an RFC 9457 problem with this status and code, closing the
        connection, with the security headers."""
        assert self.status == status, (self.status, self.headers, self.body[:500])
        assert self.headers["content-type"] == "application/problem+json", self.headers
        body = orjson.loads(self.body)
        assert body.keys() >= PROBLEM_FIELDS and (body["status"], body["code"]) == (status, code)
        assert self.headers["x-content-type-options"] == "nosniff", self.headers
        return dict(body)


def _connect(server: RealServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=WAIT_SECONDS)


def read_answer(sock: socket.socket) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed inside the answer: {data!r}"
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body)


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection (after its answer), as it says it does."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def _head(server: RealServer, method: str, path: str, *fields: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {server.key}"]
    return ("\r\n".join([*lines, *fields]) + "\r\n\r\n").encode()


def _json_put(server: RealServer, path: str, document: bytes) -> bytes:
    """A whole PUT of this JSON document, as the client's bytes on the wire."""
    fields = ("Content-Type: application/json", f"Content-Length: {len(document)}")
    return _head(server, "PUT", path, *fields) + document


def _line(index: int) -> bytes:
    """An NDJSON upsert of exactly 1,000 bytes, newline included."""
    line = orjson.dumps({"op": "upsert", "type": "t", "id": f"i{index:03}", "data": {"p": ""}})
    padded = line.replace(b'"p":""', b'"p":"' + b"x" * (999 - len(line)) + b'"')
    assert len(padded) == 999
    return padded + b"\n"


def _auth(server: RealServer, content_type: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.key}", "Content-Type": content_type}


def _chunked(
    server: RealServer, method: str, path: str, body: bytes, *, piece: int, content_type: str
) -> requests.Response:
    """Send ``body`` chunked, in pieces of ``piece`` bytes (requests sends a generator so)."""
    pieces = (body[start : start + piece] for start in range(0, len(body), piece))
    return requests.request(
        method,
        server.base_url + path,
        data=pieces,
        headers=_auth(server, content_type),
        timeout=WAIT_SECONDS,
    )


# --- body size, whatever the framing ---------------------------------------------------


@pytest.mark.parametrize("piece", [1000, 700])
def test_a_chunked_bulk_body_over_the_limit_is_refused_not_cut_short(
    server: RealServer, piece: int
) -> None:
    body = b"".join(_line(n) for n in range(40))  # 40,000 bytes, twice the limit
    before = row_count(server.database_url)
    response = _chunked(
        server, "POST", "/v1/bulk", body, piece=piece, content_type="application/x-ndjson"
    )
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "payload_too_large"
    assert response.headers["Connection"] == "close"
    assert row_count(server.database_url) == before


def test_a_chunked_document_over_the_limit_is_payload_too_large(server: RealServer) -> None:
    document = orjson.dumps({"s": "x" * 100_000})
    before = row_count(server.database_url)
    response = _chunked(
        server, "PUT", "/v1/resources/t/big", document, piece=4096, content_type="application/json"
    )
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "payload_too_large"
    assert row_count(server.database_url) == before


def test_a_chunked_body_of_exactly_the_limit_is_read_in_full(server: RealServer) -> None:
    body = b"".join(_line(n) for n in range(MAX_BODY // 1000))
    response = _chunked(
        server, "POST", "/v1/bulk", body, piece=700, content_type="application/x-ndjson"
    )
    assert response.status_code == 202, response.text
    assert response.json()["total"] == MAX_BODY // 1000


@pytest.mark.parametrize(
    "framing", [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n", b"2\r\n{}\r\n"], ids=repr
)
def test_broken_chunked_framing_is_a_bad_request_and_closes(
    server: RealServer, framing: bytes
) -> None:
    head = _head(
        server,
        "PUT",
        "/v1/resources/t/chunks",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
    )
    with _connect(server) as sock:
        sock.sendall(head + framing)
        sock.shutdown(socket.SHUT_WR)
        answer = read_answer(sock)
        answer.problem(400, "malformed_body")
        assert answer.headers["connection"] == "close"


# --- a refused body closes the connection ------------------------------------------------


def test_an_oversize_body_is_answered_with_connection_close_and_the_connection_closes(
    server: RealServer,
) -> None:
    document = orjson.dumps({"s": "x" * 100_000})
    with _connect(server) as sock:
        sock.sendall(_json_put(server, "/v1/resources/t/big", document))
        answer = read_answer(sock)
        answer.problem(413, "payload_too_large")
        assert answer.headers["connection"] == "close"
        assert _closed_by_server(sock)


def test_a_session_reusing_its_connection_after_a_413_gets_its_next_answer(
    server: RealServer,
) -> None:
    with requests.Session() as session:
        for size in range(75_000, 100_001, 5_000):
            refused = session.put(
                server.base_url + "/v1/resources/t/big",
                data=orjson.dumps({"s": "x" * size}),
                headers=_auth(server, "application/json"),
                timeout=WAIT_SECONDS,
            )
            assert refused.status_code == 413, refused.text
            assert refused.headers["Connection"] == "close"
            assert session.get(server.base_url + "/healthz", timeout=WAIT_SECONDS).ok


def test_a_document_read_in_full_but_over_the_limit_keeps_the_connection_alive(
    server: RealServer,
) -> None:
    """Over the document limit but within the wire allowance, the body is read to its
    end to measure it: the connection serves the next request."""
    document = orjson.dumps({"s": "x" * MAX_DOCUMENT})
    with _connect(server) as sock:
        sock.sendall(_json_put(server, "/v1/resources/t/over", document))
        read_answer(sock).problem(413, "payload_too_large")
        sock.sendall(_head(server, "GET", "/v1/resources/t/over"))
        read_answer(sock).problem(404, "not_found")


def test_a_body_shorter_than_its_content_length_is_400_and_closes(server: RealServer) -> None:
    head = _head(
        server,
        "PUT",
        "/v1/resources/t/short",
        "Content-Type: application/json",
        "Content-Length: 1000",
    )
    with _connect(server) as sock:
        sock.sendall(head + b'{"a": 1}')
        sock.shutdown(socket.SHUT_WR)
        answer = read_answer(sock)
        answer.problem(400, "malformed_body")
        assert answer.headers["connection"] == "close"


def test_a_body_read_in_full_keeps_the_connection_alive(server: RealServer) -> None:
    with requests.Session() as session:
        for n in range(3):
            written = session.put(
                server.base_url + "/v1/resources/t/alive",
                json={"n": n},
                headers={"Authorization": f"Bearer {server.key}"},
                timeout=WAIT_SECONDS,
            )
            assert written.status_code in (200, 201), written.text
            assert written.headers["Connection"] == "keep-alive"


# --- time limits ----------------------------------------------------------------------------


def test_stalled_bodies_and_headers_get_408_while_other_requests_are_answered(
    server: RealServer,
) -> None:
    """More stalled clients than threads: each gets its 408 when its time is up, which
    frees its thread, and a health check sent meanwhile is answered."""
    stalled_body = (
        _head(
            server,
            "PUT",
            "/v1/resources/hx/x",
            "Content-Type: application/json",
            "Content-Length: 10",
        )
        + b'{"a"'
    )
    stalled_headers = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: "
    before = row_count(server.database_url)
    bodies = [_connect(server) for _ in range(THREADS + 1)]
    headers = [_connect(server) for _ in range(THREADS + 1)]
    try:
        for sock in bodies:
            sock.sendall(stalled_body)
        for sock in headers:
            sock.sendall(stalled_headers)
        assert requests.get(server.base_url + "/healthz", timeout=WAIT_SECONDS).ok
        for sock in bodies + headers:
            answer = read_answer(sock)
            detail = answer.problem(408, "request_timeout")["detail"]
            assert "did not arrive within 2 s" in str(detail), detail
            assert answer.headers["connection"] == "close"
            assert _closed_by_server(sock)
    finally:
        for sock in bodies + headers:
            sock.close()
    assert row_count(server.database_url) == before


# --- gunicorn's own errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        pytest.param(
            b"POST /v1/bulk HTTP/1.1\r\nHost: x\r\nIdempotency-Key: " + b"k" * 10_000 + b"\r\n\r\n",
            431,
            "request_header_fields_too_large",
            id="header-over-8k",
        ),
        pytest.param(
            b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long", id="uri"
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Type: garbage/\x01\r\n\r\n",
            400,
            "bad_request",
            id="control-character-in-header",
        ),
        pytest.param(b"GARBAGE\r\n\r\n", 400, "bad_request", id="request-line"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, chunked\r\n\r\n",
            400,
            "bad_request",
            id="stacked-chunked",
        ),
    ],
)
def test_gunicorns_own_errors_are_problems_too(
    server: RealServer, request_bytes: bytes, status: int, code: str
) -> None:
    with _connect(server) as sock:
        sock.sendall(request_bytes)
        answer = read_answer(sock)
        body = answer.problem(status, code)
        assert answer.headers["connection"] == "close"
        assert b"<html" not in answer.body and "Traceback" not in str(body)


def test_serve_opens_no_control_socket() -> None:
    """gunicorn's control socket has one path per user: two servers would share it."""
    assert Server(Settings(), "127.0.0.1", 0).cfg.control_socket_disable is True


def test_the_real_server_logged_no_control_socket(server: RealServer) -> None:
    assert "control socket" not in server.process.log().lower()
