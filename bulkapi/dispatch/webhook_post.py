"""One webhook attempt over HTTP: look the host up, check it, POST to the checked address.

Every address the host resolves to is checked (unless the operator allows private
callbacks); the request then goes to the checked address, so a name that resolves
differently a moment later (DNS rebinding) cannot redirect it. Redirects are not
followed: a 3xx is a failed attempt.

An attempt has one deadline for all it does. The lookup is waited for only until then
(``bulkapi.resolver``); connecting gets at most the connect timeout of the time left; the
TLS handshake, sending, and every read of the answer get only the time left. A socket
timeout alone would bound each read, not their sum: a receiver answering one byte at a
time could hold an attempt for as long as it liked.
"""

from __future__ import annotations

import http.client
import math
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bulkapi.core.webhooks import IPAddress, forbidden_address
from bulkapi.resolver import Resolve, lookup, system_addresses

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

#: Most bytes of a receiver's answer read (and discarded).
MAX_RESPONSE_BYTES = 64 * 1024


class TargetForbidden(Exception):
    """The callback host resolves to an address webhooks may not reach: not retried."""


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int


@dataclass(frozen=True, slots=True)
class Limits:
    """How long an attempt may take."""

    #: ``time.monotonic()`` by which the attempt is over, answered or not.
    deadline: float
    #: Most seconds connecting may take, of the time left.
    connect_timeout: float


def time_left(deadline: float) -> float:
    """Seconds until ``deadline``; ``TimeoutError`` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the attempt ran out of time (BULKAPI_WEBHOOK_TIMEOUT)")
    return left


def checked(host: str, addresses: list[IPAddress], allow_private: bool) -> list[IPAddress]:
    """The addresses, unless one of them is forbidden (``TargetForbidden``)."""
    for address in addresses:
        reason = None if allow_private else forbidden_address(address)
        if reason is not None:
            raise TargetForbidden(f"{host} resolves to a {reason} address")
    return addresses


class _DeadlineSocket(socket.socket):
    """A TCP socket whose every read and write may take only the time left."""

    deadline = math.inf

    @classmethod
    def adopt(cls, sock: socket.socket, deadline: float) -> _DeadlineSocket:
        adopted = cls(sock.family, sock.type, sock.proto, sock.detach())
        adopted.deadline = deadline
        return adopted

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(time_left(self.deadline))
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self.settimeout(time_left(self.deadline))
        super().sendall(data, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The same for TLS (``SSLContext.sslsocket_class``): the TLS reads and writes are
    the ones that wait on the receiver."""

    deadline = math.inf

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(time_left(self.deadline))
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self.settimeout(time_left(self.deadline))
        super().sendall(data, flags)


def _connect(address: str, port: int, limits: Limits) -> socket.socket:
    timeout = min(limits.connect_timeout, time_left(limits.deadline))
    try:
        return socket.create_connection((address, port), timeout)
    except TimeoutError:
        raise TimeoutError(
            f"connecting to {address} port {port} took longer than {timeout:g} s"
        ) from None


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a fixed, already checked address; Host stays the URL's host."""

    def __init__(self, host: str, port: int, address: str, limits: Limits) -> None:
        super().__init__(host, port, timeout=limits.connect_timeout)
        self._address, self._limits = address, limits

    def connect(self) -> None:
        sock = _connect(self._address, self.port, self._limits)
        self.sock = _DeadlineSocket.adopt(sock, self._limits.deadline)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As above, with TLS: SNI and the certificate check use the URL's host name."""

    def __init__(self, host: str, port: int, address: str, limits: Limits) -> None:
        self._tls = ssl.create_default_context()
        self._tls.sslsocket_class = _DeadlineSSLSocket
        super().__init__(host, port, timeout=limits.connect_timeout, context=self._tls)
        self._address, self._limits = address, limits

    def connect(self) -> None:
        sock = _connect(self._address, self.port, self._limits)
        # One bound for the whole handshake: CPython counts a handshake's timeout down.
        sock.settimeout(time_left(self._limits.deadline))
        tls = self._tls.wrap_socket(sock, server_hostname=self.host)
        assert isinstance(tls, _DeadlineSSLSocket)
        tls.deadline = self._limits.deadline
        self.sock = tls


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    limits: Limits,
    allow_private: bool,
    *,
    resolve: Resolve = system_addresses,
) -> Answer:
    """POST ``body`` to ``url`` once, at an address checked first; no redirects; over by
    ``limits.deadline`` (``TimeoutError`` then)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    found = lookup(host, time_left(limits.deadline), resolve)
    addresses = checked(host, found, allow_private)
    kind = _PinnedHTTPSConnection if secure else _PinnedHTTPConnection
    connection = kind(host, port, str(addresses[0]), limits)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        return Answer(response.status)
    finally:
        connection.close()


#: One attempt's I/O (``post``), replaceable in tests.
Transport = Callable[[str, bytes, dict[str, str], Limits, bool], Answer]
