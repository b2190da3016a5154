"""Sending webhooks: claim due deliveries, POST them signed a few at once, record every attempt.

A run keeps up to ``threads`` attempts in flight. It claims deliveries only for idle
threads, right before they are sent, and at most ``tenant_share`` of one tenant at a
time, so a tenant whose receivers are slow or unreachable holds that many threads at
most while every other tenant's webhooks go on.

An attempt's deadline is counted from its claim and the claim lasts ``LEASE_MARGIN``
longer, so no other sender can claim a delivery while one of its attempts may still be
running. Each attempt records its own outcome from its thread, so one that ends after
the run was interrupted (the actor's time limit) is recorded all the same; and outcomes
are recorded conditionally (``store.webhooks.record_result``), so one that comes too
late anyway (the database was out of reach for longer than the margin) changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from bulkapi.core.backoff import backoff_seconds
from bulkapi.core.webhooks import DeliveryStatus, signed_headers
from bulkapi.dispatch.drainer import DrainState
from bulkapi.dispatch.webhook_post import Limits, TargetForbidden, Transport, post
from bulkapi.store.database import utcnow
from bulkapi.store.jobs import JobRecord, get_job
from bulkapi.store.webhooks import (
    AttemptResult,
    ClaimedDelivery,
    claim_due,
    record_result,
    set_payload,
)

logger = logging.getLogger(__name__)

#: Attempts one run makes at once (its threads).
SEND_THREADS = 4
#: Attempts of one tenant one run has in flight at most.
TENANT_SHARE = 2
#: Seconds a claim outlasts its attempt's deadline: time to record the outcome.
LEASE_MARGIN = 30.0
USER_AGENT = "bulkapi-webhooks/1"

#: Renders a terminal job as the body to send (``api.representations.job_body``).
Render = Callable[[JobRecord], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Claim:
    delivery: ClaimedDelivery
    limits: Limits


@dataclass
class WebhookSender:
    engine: Engine
    render: Render
    attempts: int
    first_backoff: float
    max_backoff: float
    #: Seconds one attempt may take in all (lookup, connect, TLS, request, answer).
    timeout: float
    allow_private: bool
    #: Seconds a run keeps claiming; attempts in flight then still end before it returns.
    budget_seconds: float
    #: Seconds connecting may take, within ``timeout``.
    connect_timeout: float = 3.0
    threads: int = SEND_THREADS
    tenant_share: int = TENANT_SHARE
    transport: Transport = post

    def run(self, _shard: int = 0) -> DrainState:
        """Attempt due deliveries, ``threads`` at once, until none is due or the budget is
        spent; returns once every attempt it began has ended and been recorded."""
        stop_claiming = time.monotonic() + self.budget_seconds
        in_flight: dict[Future[None], str] = {}  # attempt -> its tenant
        with ThreadPoolExecutor(self.threads, thread_name_prefix="webhook") as pool:
            while True:
                idle = self.threads - len(in_flight)
                if idle and time.monotonic() < stop_claiming:
                    for claim in self._claim(idle, Counter(in_flight.values())):
                        in_flight[pool.submit(self._send, claim)] = claim.delivery.tenant_id
                if not in_flight:
                    spent = time.monotonic() >= stop_claiming
                    return DrainState.MORE if spent else DrainState.EMPTY
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for attempt in done:
                    del in_flight[attempt]
                    attempt.result()  # a failure to record ends the run (the actor retries)

    def _claim(self, limit: int, busy: Counter[str]) -> list[_Claim]:
        """Claim due deliveries in one transaction, fixing the body of first attempts.
        Their deadline starts now, inside the transaction (on SQLite, once the write lock
        is held), so the lease, counted from the same moment, always outlasts them."""
        with self.engine.begin() as conn:
            limits = Limits(time.monotonic() + self.timeout, self.connect_timeout)
            now = utcnow()
            lease = now + timedelta(seconds=self.timeout + LEASE_MARGIN)
            claimed = claim_due(
                conn, now, limit, lease, self.attempts, per_tenant=self.tenant_share, busy=busy
            )
            return [_Claim(self._with_payload(conn, delivery), limits) for delivery in claimed]

    def _with_payload(self, conn: Connection, delivery: ClaimedDelivery) -> ClaimedDelivery:
        """The delivery with its body: fixed at the first attempt from the terminal job,
        so every retry sends (and signs) the same bytes."""
        if delivery.payload is not None:
            return delivery
        job = get_job(conn, delivery.tenant_id, delivery.job_id)
        payload = orjson.dumps(self.render(job)).decode()
        set_payload(conn, delivery.id, payload)
        return dataclasses.replace(delivery, payload=payload)

    def _send(self, claim: _Claim) -> None:
        """Make one attempt and record its outcome (in the attempt's own thread)."""
        result = self._attempt(claim)
        with self.engine.begin() as conn:
            applied = record_result(conn, result, utcnow())
        if not applied:
            logger.warning(
                "webhook %s: attempt %s ended after its claim lapsed; its outcome (%s) "
                "is listed but did not change the delivery",
                claim.delivery.id,
                result.attempt,
                result.error or result.status_code,
            )

    def _attempt(self, claim: _Claim) -> AttemptResult:
        delivery = claim.delivery
        body = (delivery.payload or "").encode()
        headers = signed_headers(delivery.secret, delivery.id, int(time.time()), body, USER_AGENT)
        started = time.monotonic()
        status_code: int | None = None
        permanent = False
        try:
            answer = self.transport(delivery.url, body, headers, claim.limits, self.allow_private)
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
            delay = backoff_seconds(
                delivery.attempt, self.first_backoff, self.max_backoff, random.random()
            )
            retry_at = utcnow() + timedelta(seconds=delay)
        return AttemptResult(
            delivery.id, delivery.attempt, status_code, error, duration_ms, outcome, retry_at
        )
