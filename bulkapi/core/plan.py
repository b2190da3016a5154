"""Planning writes: what each operation does, decided without I/O.

Both write paths share this module. A drain reads a batch of pending operations and
the current state of their resources, asks ``plan_batch`` what happens to each, and
writes the plan back set-based; a synchronous write reads and locks one resource and
asks ``plan_write``. Operator code (schemas, business rules, effect conditions) runs
here, through the ``Decide`` callable the caller passes in, and never inside a store
function: the store only locks, reads and writes.

A rule that crashes (raises anything but ``RuleRejected``) is not retried in place.
The batch goes on without the key: the operation stays pending with one more attempt
counted, and its key waits until a retry time, so nothing holds a lock while operator
code is given time to recover. After the configured attempts it fails alone with
``apply_failed``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from bulkapi.core.apply import ABSENT, Outcome, ResourceState
from bulkapi.core.backoff import backoff_seconds
from bulkapi.core.errors import ApplyFailed, NotFound, RuleRejectedWrite, ValidationFailed
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpError, OpKind, OpStatus
from bulkapi.core.preconditions import Preconditions

#: How a write is decided: the operator's schema checks and rules, and the effects it
#: triggers. Raising anything is a crash of operator code, which is retried later.
Decide = Callable[[ResourceState, Operation], Outcome]

#: (tenant_id, type, id): how a batch names a resource.
StateKey = tuple[str, str, str]

_EXPIRED = "The job's deadline passed before this operation's turn."


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a crashing rule is tried, and how long its key waits between tries."""

    attempts: int = 3
    first_backoff: float = 0.05
    max_backoff: float = 30.0


@dataclass(frozen=True, slots=True)
class Pending:
    """One pending bulk operation, as the store read it."""

    #: The store's handle for the operation (its row id); the planner only hands it back.
    ref: int
    job_id: str
    index: int
    tenant_id: str
    partition: int
    seq: int
    operation: Operation
    #: Attempts that already ended in a crash of operator code.
    attempts: int = 0

    @property
    def key(self) -> StateKey:
        return (self.tenant_id, self.operation.key.type, self.operation.key.id)


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What a batch must know of a job: whether its remaining work still runs."""

    deadline: datetime | None = None
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class Decided:
    """An operation that leaves ``pending``, and how."""

    ref: int
    status: OpStatus
    version: int | None = None
    error: OpError | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Deferred:
    """An operation whose rule crashed: still pending, with ``attempts`` now counted."""

    ref: int
    attempts: int


@dataclass(frozen=True, slots=True)
class KeyWrite:
    """What becomes of one resource row."""

    key: StateKey
    #: The state after the batch (unchanged when nothing applied).
    state: ResourceState
    #: Whether ``state`` differs from what was read (version and document to write).
    changed: bool
    #: Operations of this key that left ``pending`` (the row's pending count drops by it).
    done: int
    #: The key waits for a crashed rule's retry until then (None: it does not wait).
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """One applied write whose type asked for side effects."""

    tenant_id: str
    key: ResourceKey
    partition: int
    #: Stable per write (``job.index`` for bulk), so handlers can use it downstream.
    operation_id: str
    job_id: str | None
    index: int | None
    kind: OpKind
    version: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    effects: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Applied:
    """One version a write made: a line of the resource's history."""

    key: StateKey
    version: int
    kind: OpKind
    #: The bulk operation that made it (None for a sync write).
    job_id: str | None
    index: int | None


@dataclass(slots=True)
class Tally:
    """Outcomes of one job's operations in a batch."""

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    def add(self, status: OpStatus) -> None:
        if status is OpStatus.SUCCEEDED:
            self.succeeded += 1
        elif status is OpStatus.FAILED:
            self.failed += 1
        else:
            self.cancelled += 1

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled


@dataclass
class BatchPlan:
    decided: list[Decided] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)
    keys: list[KeyWrite] = field(default_factory=list)
    #: Outcome counts per (job, partition).
    tallies: dict[tuple[str, int], Tally] = field(default_factory=dict)
    effects: list[AppliedChange] = field(default_factory=list)
    #: Every version the batch made, in order per key.
    applied: list[Applied] = field(default_factory=list)

    @property
    def retry_at(self) -> datetime | None:
        """When the earliest key held back by a crashed rule may be tried again."""
        return min((k.retry_at for k in self.keys if k.retry_at is not None), default=None)


def operation_id(job_id: str, index: int) -> str:
    """A bulk operation's id: stable, so it can serve as an idempotency key downstream."""
    return f"{job_id}.{index}"


def crash_message(error: BaseException, attempts: int) -> str:
    return f"{type(error).__name__}: {error} (failed {attempts} attempts)"


def plan_batch(
    batch: Sequence[Pending],
    states: Mapping[StateKey, ResourceState],
    jobs: Mapping[str, JobFacts],
    *,
    now: datetime,
    decide: Decide,
    policy: RetryPolicy,
    jitter: Callable[[], float],
) -> BatchPlan:
    """Decide every operation of a batch, key by key in sequence order.

    ``batch`` must hold, for every key in it, that key's lowest pending sequence numbers
    (the store selects oldest first); ``states`` holds the keys' current states (absent
    keys may be missing). ``jitter`` draws a number in [0, 1) for retry delays.
    """
    plan = BatchPlan()
    ordered = sorted(batch, key=lambda p: (p.key, p.seq))
    running = JobFacts()
    for key, group in groupby(ordered, key=lambda p: p.key):
        before = states.get(key, ABSENT)
        state = before
        done = 0
        retry_at: datetime | None = None
        for pending in group:
            job = jobs.get(pending.job_id, running)
            if job.cancelled:
                decided = Decided(pending.ref, OpStatus.CANCELLED)
            elif job.deadline is not None and job.deadline <= now:
                decided = Decided(
                    pending.ref, OpStatus.CANCELLED, None, OpError.DEADLINE_EXCEEDED, _EXPIRED
                )
            else:
                try:
                    outcome = decide(state, pending.operation)
                except Exception as error:
                    attempts = pending.attempts + 1
                    if attempts < policy.attempts:
                        plan.deferred.append(Deferred(pending.ref, attempts))
                        delay = backoff_seconds(
                            attempts, policy.first_backoff, policy.max_backoff, jitter()
                        )
                        retry_at = now + timedelta(seconds=delay)
                        break  # later writes of this key wait for this one
                    outcome = Outcome(state, OpError.APPLY_FAILED, crash_message(error, attempts))
                decided = _decided(pending, outcome)
                if outcome.succeeded:
                    if outcome.effects:
                        plan.effects.append(_change(pending, state, outcome))
                    state = outcome.state
                    plan.applied.append(
                        Applied(
                            key,
                            state.version,
                            pending.operation.kind,
                            pending.job_id,
                            pending.index,
                        )
                    )
            plan.decided.append(decided)
            counted = (pending.job_id, pending.partition)
            tally = plan.tallies.get(counted)
            if tally is None:
                tally = plan.tallies[counted] = Tally()
            tally.add(decided.status)
            done += 1
        plan.keys.append(KeyWrite(key, state, state is not before, done, retry_at))
    return plan


def _decided(pending: Pending, outcome: Outcome) -> Decided:
    if outcome.succeeded:
        return Decided(pending.ref, OpStatus.SUCCEEDED, outcome.state.version)
    return Decided(pending.ref, OpStatus.FAILED, None, outcome.error, outcome.message)


def _change(pending: Pending, state: ResourceState, outcome: Outcome) -> AppliedChange:
    op = pending.operation
    return AppliedChange(
        pending.tenant_id,
        op.key,
        pending.partition,
        operation_id(pending.job_id, pending.index),
        pending.job_id,
        pending.index,
        op.kind,
        outcome.state.version,
        state.data,
        outcome.state.data,
        outcome.effects,
    )


class OperatorCrashed(Exception):
    """Operator code raised while deciding a synchronous write: retry it, unlocked."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def plan_write(
    current: ResourceState | None,
    operation: Operation,
    preconditions: Preconditions,
    decide: Decide,
) -> Outcome:
    """Decide a synchronous write against the key's locked state (None: no row at all),
    once no bulk work is pending on it. Raises the problem the caller answers with."""
    key = operation.key
    name = f"{key.type}/{key.id}"
    state = current or ABSENT
    if operation.kind is not OpKind.UPSERT and not state.exists:
        # Without a resource this is a 404, so preconditions are not evaluated
        # (RFC 9110 13.2.1).
        raise NotFound(f"No resource {name}.")
    preconditions.check(state, name)
    try:
        outcome = decide(state, operation)
    except Exception as error:
        raise OperatorCrashed(error) from error
    if outcome.error is OpError.RULE_REJECTED:
        if outcome.details:
            raise ValidationFailed(outcome.message or "invalid document", dict(outcome.details))
        raise RuleRejectedWrite(outcome.message or "rejected by a business rule")
    if outcome.error is not None:
        raise ApplyFailed(outcome.message or "the write could not be applied")
    return outcome
