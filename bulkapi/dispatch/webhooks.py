"""Sending webhooks: claim due deliveries, POST them signed, record every attempt.

The receiver's host is resolved here and every address it resolves to is checked
(unless the operator allows private callbacks); the request then goes to the checked
address, so a name that resolves differently a moment later (DNS rebinding) cannot
redirect it. Redirects are not followed: a 3xx is a failed attempt.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from bulkapi.core.webhooks import (
    DeliveryStatus,
    IPAddress,
    forbidden_address,
    retry_delay,
    signed_headers,
)
from bulkapi.dispatch.drainer import DrainState
from bulkapi.store.database import utcnow
from bulkapi.store.jobs import JobRecord, get_job
from bulkapi.store.webhooks import (
    AttemptResult,
    ClaimedDelivery,
    claim_due,
    record_result,
    release,
    set_payload,
)

logger = logging.getLogger(__name__)

#: Deliveries claimed per pass (attempted one after another).
CLAIM_BATCH = 10
#: Seconds beyond the timeout before a claimed attempt that never reported is retried.
LEASE_MARGIN = 30.0
#: Most bytes of a receiver's answer read (and discarded).
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "bulkapi-webhooks/1"

#: Renders a terminal job as the body to send (``api.representations.job_body``).
Render = Callable[[JobRecord], dict[str, Any]]


class TargetForbidden(Exception):
    """The callback host resolves to an address webhooks may not reach: not retried."""


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int


def resolve(host: str, port: int, allow_private: bool) -> list[IPAddress]:
    """The host's addresses; TargetForbidden if any of them is forbidden."""
    found: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        reason = None if allow_private else forbidden_address(address)
        if reason is not None:
            raise TargetForbidden(f"{host} resolves to {address}, a {reason} address")
        if address not in found:
            found.append(address)
    if not found:
        raise OSError(f"{host} has no address")
    return found


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a fixed, already checked address; Host stays the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As above, with TLS: SNI and the certificate check use the URL's host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def post(
    url: str, body: bytes, headers: dict[str, str], timeout: float, allow_private: bool
) -> Answer:
    """POST ``body`` to ``url`` once, at an address checked first; no redirects."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    address = str(resolve(host, port, allow_private)[0])
    kind = _PinnedHTTPSConnection if secure else _PinnedHTTPConnection
    connection = kind(host, port, address, timeout)
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
Transport = Callable[[str, bytes, dict[str, str], float, bool], Answer]


@dataclass
class WebhookSender:
    engine: Engine
    render: Render
    attempts: int
    first_backoff: float
    max_backoff: float
    timeout: float
    allow_private: bool
    budget_seconds: float
    transport: Transport = post

    def run(self, _shard: int = 0) -> DrainState:
        """Attempt due deliveries until none is due or the budget is spent."""
        deadline = time.monotonic() + self.budget_seconds
        while True:
            claimed = self._claim()
            if not claimed:
                return DrainState.EMPTY
            for made, delivery in enumerate(claimed, start=1):
                result = self._attempt(delivery)
                with self.engine.begin() as conn:
                    record_result(conn, result, utcnow())
                if time.monotonic() >= deadline:
                    if made < len(claimed):
                        with self.engine.begin() as conn:
                            release(conn, claimed[made:], utcnow())
                    return DrainState.MORE

    def _claim(self) -> list[ClaimedDelivery]:
        """Claim due deliveries in one transaction, fixing the body of first attempts."""
        now = utcnow()
        lease = now + timedelta(seconds=self.timeout * 3 + LEASE_MARGIN)
        with self.engine.begin() as conn:
            claimed = claim_due(conn, now, CLAIM_BATCH, lease, self.attempts)
            return [self._with_payload(conn, delivery) for delivery in claimed]

    def _with_payload(self, conn: Connection, delivery: ClaimedDelivery) -> ClaimedDelivery:
        """The delivery with its body: fixed at the first attempt from the terminal job,
        so every retry sends (and signs) the same bytes."""
        if delivery.payload is not None:
            return delivery
        job = get_job(conn, delivery.tenant_id, delivery.job_id)
        payload = orjson.dumps(self.render(job)).decode()
        set_payload(conn, delivery.id, payload)
        return dataclasses.replace(delivery, payload=payload)

    def _attempt(self, delivery: ClaimedDelivery) -> AttemptResult:
        body = (delivery.payload or "").encode()
        headers = signed_headers(delivery.secret, delivery.id, int(time.time()), body, USER_AGENT)
        started = time.monotonic()
        status_code: int | None = None
        permanent = False
        try:
            answer = self.transport(delivery.url, body, headers, self.timeout, self.allow_private)
            status_code = answer.status_code
            error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
        except TargetForbidden as refused:
            error, permanent = f"refused: {refused}", True
        except Exception as failure:  # no answer: DNS, connect, TLS, timeout, ...
            error = (
                f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
            )
        duration_ms = int((time.monotonic() - started) * 1000)
        if error is None:
            outcome = DeliveryStatus.DELIVERED
        elif permanent or delivery.attempt >= self.attempts:
            outcome = DeliveryStatus.FAILED
        else:
            outcome = DeliveryStatus.PENDING
        if error is not None:
            logger.warning(
                "webhook %s of job %s failed (attempt %s of %s)%s: %s",
                delivery.id,
                delivery.job_id,
                delivery.attempt,
                self.attempts,
                "; giving up" if outcome is DeliveryStatus.FAILED else "",
                error,
            )
        retry_at = None
        if outcome is DeliveryStatus.PENDING:
            delay = retry_delay(
                delivery.attempt, self.first_backoff, self.max_backoff, random.random()
            )
            retry_at = utcnow() + timedelta(seconds=delay)
        return AttemptResult(
            delivery.id, delivery.attempt, status_code, error, duration_ms, outcome, retry_at
        )
