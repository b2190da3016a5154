"""Running a partition's side effects: one runner per partition, each resource in order.

Per-resource order needs one runner per partition at a time, held for the whole run,
handler calls included (they happen outside any transaction). PostgreSQL: a session
advisory lock on the runner's own connection, freed by the server if the process dies.
SQLite runs every worker in one process (embedded mode), so a lock in memory does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from dramatiq.middleware import Interrupt
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import Connection

from bulkapi.core.backoff import backoff_seconds
from bulkapi.core.effects import MAX_BACKOFF_SECONDS, EffectStatus
from bulkapi.dispatch.drainer import DrainState
from bulkapi.registry import TypeRegistry
from bulkapi.store.database import is_postgres, utcnow
from bulkapi.store.effect_runs import (
    AttemptOutcome,
    Claim,
    PendingEffect,
    claim_attempts,
    due_effects,
    record_outcomes,
    release_claims,
)
from bulkapi.types import EffectEvent

logger = logging.getLogger(__name__)

#: First half of the PostgreSQL advisory-lock key for effect runners ("ef").
EFFECTS_LOCK_SPACE = 0x6566
#: Effects read per pass: every resource's earliest due ones first, then its next ones.
#: A pass costs two commits (claims, outcomes), so a pass as large as a drain batch keeps
#: the outbox from costing more per change than the change itself.
EFFECTS_PER_PASS = 500

_DIED = (
    "gave up after {attempts} attempts: the last did not finish "
    "(the worker stopped or timed out during the handler)"
)
_TIME_LIMIT = "the handler ran past the worker's time limit"


@dataclass
class EffectRunner:
    engine: Engine
    registry: TypeRegistry
    attempts: int
    first_backoff: float
    budget_seconds: float
    _local_locks: dict[int, threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    def run(self, partition: int) -> DrainState:
        """Run the partition's due effects until none is left or the budget is spent.

        HELD when another runner has the partition. A runner holds it for seconds
        (handler calls included), so rather than have wake-ups bounce off it until it
        lets go, the holder looks once more after letting go: something that came due
        after its last look while it still held the partition (and whose wake-up was
        therefore dropped) makes it answer MORE, and the partition is woken again.
        """
        with self._held(partition) as conn:
            if conn is None:
                return DrainState.HELD
            state = self._run_passes(conn, partition)
        if state is DrainState.EMPTY and self._any_due(partition):
            return DrainState.MORE
        return state

    def _run_passes(self, conn: Connection, partition: int) -> DrainState:
        deadline = time.monotonic() + self.budget_seconds
        while True:
            with conn.begin():
                due = due_effects(conn, partition, utcnow(), EFFECTS_PER_PASS)
            if not due:
                return DrainState.EMPTY
            if not self._run_pass(conn, due, deadline):
                return DrainState.MORE

    def _any_due(self, partition: int) -> bool:
        with self.engine.begin() as conn:
            return bool(due_effects(conn, partition, utcnow(), 1))

    def _run_pass(self, conn: Connection, due: list[PendingEffect], deadline: float) -> bool:
        """Claim the pass's effects in one transaction, call their handlers one by one,
        record the outcomes in one more.

        A resource's effects are called in order, and none after one of them failed and
        waits for a retry. False when the budget ran out first: the effects not reached
        get their claimed attempt back.

        Each claim is a lease. After its first call the pass starts a handler only
        before the run's deadline, at most the budget after the claim; until then, plus
        the attempt's backoff, no other runner takes the effect or a later one of its
        resource. That keeps the order even when this runner's lock goes with its
        connection (a server restart, a terminated backend) while it calls handlers: it
        only finds out when it records the outcomes.
        """
        claimed_at = utcnow()
        claims = {
            effect.id: Claim(effect.id, claimed_at + timedelta(seconds=self._lease(effect)))
            for effect in due
            if effect.attempts < self.attempts
        }
        with conn.begin():
            claim_attempts(conn, list(claims.values()))
        outcomes: list[AttemptOutcome] = []
        held_back: set[tuple[str, str, str]] = set()
        reached = calls = 0
        try:
            for effect in due:
                if calls and time.monotonic() >= deadline:
                    break
                reached += 1
                if effect.resource in held_back:
                    continue
                if effect.id not in claims:  # attempts used up: the worker of the last died
                    outcomes.append(_gave_up(effect))
                    continue
                calls += 1
                try:
                    outcome = self._attempt(effect, effect.attempts + 1)
                except Interrupt:  # the actor's time limit, or shutdown: the attempt is spent
                    outcomes.append(
                        self._failed(effect, effect.attempts + 1, _TIME_LIMIT, exc_info=False)
                    )
                    raise
                outcomes.append(outcome)
                if outcome.status is EffectStatus.PENDING:
                    held_back.add(effect.resource)
        finally:
            finished = {outcome.effect_id for outcome in outcomes}
            not_called = [effect_id for effect_id in claims if effect_id not in finished]
            with conn.begin():
                record_outcomes(conn, outcomes, utcnow())
                release_claims(conn, not_called, utcnow())
        return reached == len(due)

    def _lease(self, effect: PendingEffect) -> float:
        """Seconds a claim holds: the pass's budget, then the backoff of a failed attempt
        (an attempt that never reports back counts as one)."""
        return self.budget_seconds + backoff_seconds(
            effect.attempts + 1, self.first_backoff, MAX_BACKOFF_SECONDS
        )

    def _attempt(self, pending: PendingEffect, attempt: int) -> AttemptOutcome:
        try:
            self._call_handler(pending, attempt)
        except Exception as error:
            return self._failed(pending, attempt, f"{type(error).__name__}: {error}")
        return AttemptOutcome(pending.id, EffectStatus.SUCCEEDED, None)

    def _call_handler(self, pending: PendingEffect, attempt: int) -> None:
        found = self.registry.effect(pending.type, pending.name)
        if found is None:
            # Retried like a failure, not failed at once: during a rolling deploy an
            # older worker may meet an effect only the newer types module declares.
            raise LookupError(f"effect {pending.name!r} of {pending.type!r} is not registered here")
        _, effect = found
        effect.handler(
            EffectEvent(
                idempotency_key=pending.operation_id,
                effect=pending.name,
                tenant_id=pending.tenant_id,
                type=pending.type,
                id=pending.rid,
                op=pending.op,
                version=pending.version,
                before=pending.before,
                after=pending.after,
                attempt=attempt,
                job_id=pending.job_id,
            )
        )

    def _failed(
        self, pending: PendingEffect, attempt: int, error: str, *, exc_info: bool = True
    ) -> AttemptOutcome:
        """Log a failed attempt: pending again, due after its backoff counted from now (when
        the attempt failed), or failed for good when it was the last."""
        gave_up = attempt >= self.attempts
        logger.warning(
            "effect %s of %s/%s v%s failed (attempt %s of %s)%s: %s",
            pending.name,
            pending.type,
            pending.rid,
            pending.version,
            attempt,
            self.attempts,
            "; giving up" if gave_up else "",
            error,
            exc_info=exc_info,  # the handler's traceback
        )
        if gave_up:
            return AttemptOutcome(pending.id, EffectStatus.FAILED, error)
        retry_at = utcnow() + timedelta(
            seconds=backoff_seconds(attempt, self.first_backoff, MAX_BACKOFF_SECONDS)
        )
        return AttemptOutcome(pending.id, EffectStatus.PENDING, error, retry_at)

    @contextmanager
    def _held(self, partition: int) -> Iterator[Connection | None]:
        """The partition's runner lock and a connection to work with, or None if busy."""
        with self.engine.connect() as conn:
            if not is_postgres(conn):
                with self._locks_guard:
                    lock = self._local_locks.setdefault(partition, threading.Lock())
                if not lock.acquire(blocking=False):
                    yield None
                    return
                try:
                    yield conn
                finally:
                    lock.release()
                return
            locked = conn.execute(
                select(func.pg_try_advisory_lock(EFFECTS_LOCK_SPACE, partition))
            ).scalar()
            conn.commit()
            if not locked:
                yield None
                return
            try:
                yield conn
            finally:
                _unlock(conn, partition)


def _gave_up(effect: PendingEffect) -> AttemptOutcome:
    """Failed without a call: the worker of its last attempt died before reporting back."""
    return AttemptOutcome(effect.id, EffectStatus.FAILED, _DIED.format(attempts=effect.attempts))


def _unlock(conn: Connection, partition: int) -> None:
    """Free the session lock; if the connection is broken, drop it (the server frees it)."""
    try:
        if conn.in_transaction():
            conn.rollback()
        conn.execute(select(func.pg_advisory_unlock(EFFECTS_LOCK_SPACE, partition)))
        conn.commit()
    except Exception:
        logger.warning("could not free effects lock %s; dropping the connection", partition)
        conn.invalidate()
