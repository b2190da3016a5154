"""Running a partition's side effects: one runner per partition, heads of keys only.

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

from bulkapi.core.effects import EffectStatus, backoff_seconds
from bulkapi.dispatch.drainer import DrainState
from bulkapi.registry import TypeRegistry
from bulkapi.store.database import is_postgres, utcnow
from bulkapi.store.effects import (
    AttemptOutcome,
    Claim,
    PendingEffect,
    claim_attempts,
    due_heads,
    record_outcomes,
    release_claims,
)
from bulkapi.types import EffectEvent

logger = logging.getLogger(__name__)

#: First half of the PostgreSQL advisory-lock key for effect runners ("ef").
EFFECTS_LOCK_SPACE = 0x6566
#: Heads read per pass; a key contributes at most one per pass.
HEADS_PER_PASS = 100

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
        with self._held(partition) as conn:
            if conn is None:
                return DrainState.BUSY
            deadline = time.monotonic() + self.budget_seconds
            while True:
                with conn.begin():
                    heads = due_heads(conn, partition, utcnow(), HEADS_PER_PASS)
                if not heads:
                    return DrainState.EMPTY
                if not self._run_pass(conn, heads, deadline):
                    return DrainState.MORE

    def _run_pass(self, conn: Connection, heads: list[PendingEffect], deadline: float) -> bool:
        """Claim the heads in one transaction, call their handlers one by one, record the
        outcomes in one more. False when the budget ran out first: the heads not reached
        get their claimed attempt back."""
        now = utcnow()
        outcomes = [
            AttemptOutcome(head.id, EffectStatus.FAILED, _DIED.format(attempts=head.attempts))
            for head in heads
            if head.attempts >= self.attempts
        ]
        to_run = [head for head in heads if head.attempts < self.attempts]
        claims = {
            head.id: Claim(
                head.id,
                head.attempts + 1,
                now + timedelta(seconds=backoff_seconds(head.attempts + 1, self.first_backoff)),
            )
            for head in to_run
        }
        with conn.begin():
            claim_attempts(conn, list(claims.values()))
        made = 0
        try:
            for head in to_run:
                made += 1
                try:
                    outcomes.append(self._attempt(head, claims[head.id].attempt))
                except Interrupt:  # the actor's time limit, or shutdown: the attempt is spent
                    outcomes.append(
                        self._failed(head, claims[head.id].attempt, _TIME_LIMIT, exc_info=False)
                    )
                    raise
                if time.monotonic() >= deadline:
                    break
        finally:
            with conn.begin():
                record_outcomes(conn, outcomes, utcnow())
                release_claims(conn, [head.id for head in to_run[made:]], utcnow())
        return made == len(to_run)

    def _attempt(self, head: PendingEffect, attempt: int) -> AttemptOutcome:
        try:
            self._call_handler(head, attempt)
        except Exception as error:
            return self._failed(head, attempt, f"{type(error).__name__}: {error}")
        return AttemptOutcome(head.id, EffectStatus.SUCCEEDED, None)

    def _call_handler(self, head: PendingEffect, attempt: int) -> None:
        found = self.registry.effect(head.type, head.name)
        if found is None:
            # Retried like a failure, not failed at once: during a rolling deploy an
            # older worker may meet an effect only the newer types module declares.
            raise LookupError(f"effect {head.name!r} of {head.type!r} is not registered here")
        _, effect = found
        effect.handler(
            EffectEvent(
                idempotency_key=head.operation_id,
                effect=head.name,
                tenant_id=head.tenant_id,
                type=head.type,
                id=head.rid,
                op=head.op,
                version=head.version,
                before=head.before,
                after=head.after,
                attempt=attempt,
                job_id=head.job_id,
            )
        )

    def _failed(
        self, head: PendingEffect, attempt: int, error: str, *, exc_info: bool = True
    ) -> AttemptOutcome:
        """Log a failed attempt: pending again (due at its claim's retry time), or failed
        for good when it was the last."""
        gave_up = attempt >= self.attempts
        logger.warning(
            "effect %s of %s/%s v%s failed (attempt %s of %s)%s: %s",
            head.name,
            head.type,
            head.rid,
            head.version,
            attempt,
            self.attempts,
            "; giving up" if gave_up else "",
            error,
            exc_info=exc_info,  # the handler's traceback
        )
        status = EffectStatus.FAILED if gave_up else EffectStatus.PENDING
        return AttemptOutcome(head.id, status, error)

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
