"""The webhook sender and its outbox against real databases, without a broker: claims,
leases, late outcomes, fairness between tenants, interrupted runs.

Receivers are real HTTP servers on 127.0.0.1 (``tests/receivers.py``). Waits are bounded
by WAIT_SECONDS as a hang guard only; no test asserts how fast anything was.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from dramatiq.middleware.threading import raise_thread_exception
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy import Engine, update

from bulkapi.api.representations import job_body
from bulkapi.config import Settings
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpKind
from bulkapi.core.webhooks import DeliveryStatus, forbidden_host
from bulkapi.dispatch.drainer import DrainState
from bulkapi.dispatch.webhook_post import Answer, Limits, post
from bulkapi.dispatch.webhooks import WebhookSender
from bulkapi.store.admission import NewJob, admit
from bulkapi.store.database import make_engine, utcnow
from bulkapi.store.jobs import cancel
from bulkapi.store.migrate import upgrade
from bulkapi.store.tables import webhook_deliveries
from bulkapi.store.tenants import ensure_tenant
from bulkapi.store.webhooks import (
    AttemptResult,
    ClaimedDelivery,
    DeliveryRecord,
    any_due,
    claim_due,
    delivery_of_job,
    record_result,
)
from tests.receivers import Receiver
from tests.support import WAIT_SECONDS, database_url, wait_until

#: The pending cap a service runs with by default (these jobs stay far below it).
CAP = Settings.max_pending_operations

#: Seconds an attempt gets where it is meant to run out of time.
SHORT = 0.5
ATTEMPTS = 3


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with database_url(request.param, tmp_path) as url:
        engine = make_engine(url)
        upgrade(engine)
        try:
            yield engine
        finally:
            engine.dispose()


def _finished_job(engine: Engine, tenant: str, url: str) -> str:
    """A job of ``tenant`` cancelled at once, so its delivery to ``url`` is due now."""
    with engine.begin() as conn:
        tenant_id = ensure_tenant(conn, tenant)
        operation = Operation(OpKind.UPSERT, ResourceKey("hook", "h1"), {"n": 1})
        job = NewJob(tenant_id, [operation.key], [0], url)
        job_id = admit(conn, job, [operation], utcnow(), pending_cap=CAP).job_id
        assert cancel(conn, tenant_id, job_id, utcnow())
    return job_id


def _delivery(engine: Engine, job_id: str) -> DeliveryRecord:
    with engine.connect() as conn:
        record = delivery_of_job(conn, job_id)
    assert record is not None
    return record


def _sender(engine: Engine, **overrides: object) -> WebhookSender:
    settings: dict[str, object] = {
        "render": job_body,
        "attempts": ATTEMPTS,
        "first_backoff": 0.0,
        "max_backoff": 0.0,
        "timeout": WAIT_SECONDS,
        "allow_private": True,
        "budget_seconds": WAIT_SECONDS,
    }
    return WebhookSender(engine, **{**settings, **overrides})  # type: ignore[arg-type]


class _Runner(threading.Thread):
    """Runs ``work`` in a thread and keeps what it returned or raised."""

    def __init__(self, work: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.outcome: object = None

    def run(self) -> None:
        try:
            self.outcome = self.work()
        except BaseException as error:
            self.outcome = error

    def result(self) -> object:
        self.join(WAIT_SECONDS)
        assert not self.is_alive(), "did not end"
        return self.outcome


def _started(work: Callable[[], object]) -> _Runner:
    runner = _Runner(work)
    runner.start()
    return runner


def test_a_dripping_receiver_fails_its_attempt_with_a_timeout_and_the_run_ends(
    engine: Engine, dripping: Receiver
) -> None:
    job = _finished_job(engine, "drip", dripping.url())
    sender = _sender(engine, attempts=1, timeout=SHORT)

    assert _started(sender.run).result() is DrainState.EMPTY
    record = _delivery(engine, job)
    assert record.status == DeliveryStatus.FAILED
    [attempt] = record.attempts
    assert attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith("TimeoutError"), attempt


class _Tracked:
    """A transport that counts its calls and how many were running at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.running = 0
        self.most_at_once = 0

    def __call__(
        self, url: str, body: bytes, headers: dict[str, str], limits: Limits, allow: bool
    ) -> Answer:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            return post(url, body, headers, limits, allow)
        finally:
            with self.lock:
                self.running -= 1


def test_two_senders_racing_for_one_delivery_make_each_attempt_once_and_never_together(
    engine: Engine, dripping: Receiver
) -> None:
    job = _finished_job(engine, "race", dripping.url())
    transport = _Tracked()
    give_up = time.monotonic() + WAIT_SECONDS

    def keep_sending(sender: WebhookSender) -> None:
        while _delivery(engine, job).status == "pending" and time.monotonic() < give_up:
            sender.run()
            time.sleep(0.01)

    senders = [_sender(engine, timeout=SHORT, transport=transport) for _ in range(2)]
    racers = [_started(partial(keep_sending, sender)) for sender in senders]
    for racer in racers:
        assert racer.result() is None

    record = _delivery(engine, job)
    assert record.status == DeliveryStatus.FAILED
    assert transport.most_at_once == 1
    assert transport.calls == len(dripping.received()) == ATTEMPTS
    assert [a.attempt for a in record.attempts] == list(range(1, ATTEMPTS + 1))
    assert all(a.error and a.error.startswith("TimeoutError") for a in record.attempts)


def _claim(engine: Engine, lease_seconds: float = 60.0) -> ClaimedDelivery:
    with engine.begin() as conn:
        now = utcnow()
        [claimed] = claim_due(
            conn, now, 1, now + timedelta(seconds=lease_seconds), ATTEMPTS, per_tenant=1
        )
    return claimed


def _lapse(engine: Engine, delivery_id: str) -> None:
    """The claim's lease runs out (its sender is slow or gone): due again."""
    with engine.begin() as conn:
        conn.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == delivery_id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def _outcome(claimed: ClaimedDelivery, outcome: DeliveryStatus, error: str | None) -> AttemptResult:
    retry_at = utcnow() if outcome is DeliveryStatus.PENDING else None
    code = 204 if error is None else None
    return AttemptResult(claimed.id, claimed.attempt, code, error, 5, outcome, retry_at)


def _record(engine: Engine, result: AttemptResult) -> bool:
    with engine.begin() as conn:
        return record_result(conn, result, utcnow())


@pytest.mark.parametrize("late", [DeliveryStatus.PENDING, DeliveryStatus.FAILED])
def test_a_late_outcome_does_not_overwrite_a_later_attempts_delivered(
    engine: Engine, late: DeliveryStatus
) -> None:
    job = _finished_job(engine, "late", "http://hooks.example/x")
    first = _claim(engine)
    _lapse(engine, first.id)
    second = _claim(engine)
    assert (first.attempt, second.attempt) == (1, 2)

    assert _record(engine, _outcome(second, DeliveryStatus.DELIVERED, None))
    assert not _record(engine, _outcome(first, late, "TimeoutError: timed out"))

    record = _delivery(engine, job)
    assert record.status == DeliveryStatus.DELIVERED and record.finished_at is not None
    # The late attempt is still listed as it ended.
    assert [(a.attempt, a.error) for a in record.attempts] == [
        (1, "TimeoutError: timed out"),
        (2, None),
    ]


def test_a_late_failure_does_not_make_a_delivery_under_a_live_claim_due(engine: Engine) -> None:
    job = _finished_job(engine, "late", "http://hooks.example/x")
    first = _claim(engine)
    _lapse(engine, first.id)
    _claim(engine)  # attempt 2 is being made

    assert not _record(engine, _outcome(first, DeliveryStatus.PENDING, "HTTP 500"))
    with engine.connect() as conn:
        assert not any_due(conn, utcnow())  # attempt 2's lease still holds it
    assert _delivery(engine, job).status == DeliveryStatus.PENDING


def test_claims_take_every_tenants_oldest_first_and_at_most_a_share_of_each(
    engine: Engine,
) -> None:
    crowd = [_finished_job(engine, "crowd", f"http://crowd.example/{n}") for n in range(4)]
    other = _finished_job(engine, "other", "http://other.example/x")
    lease = utcnow() + timedelta(seconds=60)
    with engine.begin() as conn:
        tenant_of = {ensure_tenant(conn, name): name for name in ("crowd", "other")}
        first = claim_due(conn, utcnow(), 3, lease, ATTEMPTS, per_tenant=2)
    assert sorted(tenant_of[d.tenant_id] for d in first) == ["crowd", "crowd", "other"]
    assert {d.job_id for d in first} == {crowd[0], crowd[1], other}

    crowd_id = next(t for t, name in tenant_of.items() if name == "crowd")
    with engine.begin() as conn:  # two of crowd's still in flight: no room for a third
        assert claim_due(conn, utcnow(), 3, lease, ATTEMPTS, per_tenant=2, busy={crowd_id: 2}) == []
        [third] = claim_due(conn, utcnow(), 3, lease, ATTEMPTS, per_tenant=2, busy={crowd_id: 1})
    assert third.job_id == crowd[2]


def test_one_tenants_stalled_receivers_do_not_hold_up_another_tenants_webhook(
    engine: Engine, gated: Receiver, receiver: Receiver
) -> None:
    stalled = [_finished_job(engine, "stalled", gated.url(f"/{n}")) for n in range(4)]
    prompt = _finished_job(engine, "prompt", receiver.url())
    run = _started(_sender(engine).run)

    wait_until(lambda: _delivery(engine, prompt).status == "delivered", what="prompt delivery")
    assert len(gated.received()) == 2  # the stalled tenant's share, still unanswered
    assert gated.gate is not None
    gated.gate.set()
    assert run.result() is DrainState.EMPTY
    assert {_delivery(engine, job).status for job in stalled} == {"delivered"}


def test_a_run_cut_off_by_the_time_limit_still_records_every_attempt_it_began(
    engine: Engine, gated: Receiver, receiver: Receiver
) -> None:
    held = _finished_job(engine, "held", gated.url())
    quick = [_finished_job(engine, "quick", receiver.url(f"/{n}")) for n in range(3)]
    receiver.gate = threading.Event()  # hold these too, until the run is interrupted
    run = _started(_sender(engine, threads=2, tenant_share=1).run)
    wait_until(lambda: len(gated.received()) + len(receiver.received()) == 2, what="2 attempts")
    assert run.ident is not None
    raise_thread_exception(run.ident, TimeLimitExceeded)  # as dramatiq's TimeLimit does
    receiver.gate.set()  # the run wakes, is interrupted, and waits for the held attempt
    wait_until(lambda: _delivery(engine, quick[0]).status == "delivered", what="quick delivery")
    assert gated.gate is not None
    gated.gate.set()

    assert isinstance(run.result(), TimeLimitExceeded)
    assert _delivery(engine, held).status == DeliveryStatus.DELIVERED
    assert [a.status_code for a in _delivery(engine, held).attempts] == [204]
    # Nothing was claimed and left: the others are untouched, due for the next run.
    assert [len(_delivery(engine, job).attempts) for job in quick[1:]] == [0, 0]


def test_a_name_resolving_to_a_forbidden_address_fails_its_delivery_without_a_request(
    engine: Engine, receiver: Receiver
) -> None:
    name = socket.gethostname()  # in /etc/hosts; resolves to this machine
    assert forbidden_host(name) is None  # only its addresses can tell
    job = _finished_job(engine, "named", receiver.url(host=name))

    assert _started(_sender(engine, allow_private=False).run).result() is DrainState.EMPTY
    record = _delivery(engine, job)
    assert record.status == DeliveryStatus.FAILED
    [attempt] = record.attempts  # refused for good: no retries
    assert attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith("refused:"), attempt
    assert receiver.received() == []
