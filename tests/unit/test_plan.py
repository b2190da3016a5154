"""The planner: a batch's plan, applied to a model, equals applying its writes one by one."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkapi.core.apply import ABSENT, Change, Outcome, ResourceState, RuleRejected, apply_operation
from bulkapi.core.errors import ApplyFailed, NotFound, PreconditionFailed, RuleRejectedWrite
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpError, OpKind, OpStatus
from bulkapi.core.plan import (
    BatchPlan,
    JobFacts,
    OperatorCrashed,
    Pending,
    RetryPolicy,
    StateKey,
    Tally,
    plan_batch,
    plan_write,
)
from bulkapi.core.preconditions import Preconditions

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TENANT = "t1"
POLICY = RetryPolicy(attempts=3, first_backoff=1.0, max_backoff=10.0)


def plain(state: ResourceState, op: Operation) -> Outcome:
    return apply_operation(state, op)


def plan(
    batch: list[Pending],
    states: dict[StateKey, ResourceState] | None = None,
    jobs: dict[str, JobFacts] | None = None,
    decide: Any = plain,
) -> BatchPlan:
    return plan_batch(
        batch,
        states or {},
        jobs or {},
        now=NOW,
        decide=decide,
        policy=POLICY,
        jitter=lambda: 0.5,
    )


def pending(ref: int, rid: str, seq: int, kind: OpKind = OpKind.UPSERT, **extra: Any) -> Pending:
    data = extra.pop("data", {"n": ref} if kind is not OpKind.DELETE else None)
    return Pending(
        ref,
        extra.pop("job_id", "job-a"),
        ref,
        TENANT,
        3,
        seq,
        Operation(kind, ResourceKey("item", rid), data, extra.pop("if_version", None)),
        extra.pop("attempts", 0),
    )


operations = st.tuples(
    st.sampled_from(list(OpKind)),
    st.sampled_from(["a", "b", "c"]),
    st.one_of(st.none(), st.integers(0, 4)),
    st.dictionaries(st.sampled_from(["x", "y"]), st.one_of(st.none(), st.integers(0, 3))),
)
initial_states = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.builds(
        ResourceState,
        st.integers(0, 3),
        st.one_of(st.none(), st.fixed_dictionaries({"x": st.integers(0, 3)})),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(operations, max_size=25), initial_states, st.randoms())
def test_a_plan_applied_to_a_model_equals_applying_operations_one_by_one(
    specs: list[tuple[OpKind, str, int | None, dict[str, Any]]],
    initial: dict[str, ResourceState],
    shuffle: Any,
) -> None:
    batch = []
    seqs: Counter[str] = Counter()
    for ref, (kind, rid, if_version, data) in enumerate(specs):
        seqs[rid] += 1
        body = None if kind is OpKind.DELETE else {k: v for k, v in data.items() if v is not None}
        if kind is OpKind.PATCH:
            body = data
        batch.append(
            Pending(
                ref,
                "job",
                ref,
                TENANT,
                3,
                seqs[rid],
                Operation(kind, ResourceKey("item", rid), body, if_version),
            )
        )
    states = {(TENANT, "item", rid): state for rid, state in initial.items()}

    # The model: every write in admission order, one at a time.
    model = dict(states)
    expected: dict[int, tuple[OpStatus, int | None, OpError | None]] = {}
    for p in batch:
        outcome = apply_operation(model.get(p.key, ABSENT), p.operation)
        if outcome.succeeded:
            model[p.key] = outcome.state
            expected[p.ref] = (OpStatus.SUCCEEDED, outcome.state.version, None)
        else:
            expected[p.ref] = (OpStatus.FAILED, None, outcome.error)

    shuffled = list(batch)
    shuffle.shuffle(shuffled)  # the planner orders by key and sequence itself
    result = plan(shuffled, states)

    assert {d.ref: (d.status, d.version, d.error) for d in result.decided} == expected
    written = {k.key: k.state for k in result.keys if k.changed}
    for key, state in model.items():
        if state != states.get(key):
            assert written[key] == state
    for k in result.keys:
        assert k.done == seqs[k.key[2]]
        assert k.changed == (k.key in written)
    tally = result.tallies.get(("job", 3), Tally())
    assert (tally.succeeded, tally.failed, tally.cancelled) == (
        sum(1 for s in expected.values() if s[0] is OpStatus.SUCCEEDED),
        sum(1 for s in expected.values() if s[0] is OpStatus.FAILED),
        0,
    )
    assert not result.deferred and result.retry_at is None


class Flaky:
    """Crashes on the writes whose data names it, ``times`` times each."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.calls: Counter[int] = Counter()

    def __call__(self, state: ResourceState, op: Operation) -> Outcome:
        assert op.data is not None
        if op.data.get("crash"):
            self.calls[op.data["n"]] += 1
            if self.calls[op.data["n"]] <= self.times:
                raise TimeoutError("prices unavailable")
        return apply_operation(state, op)


def test_a_crash_puts_off_its_key_alone_and_counts_the_attempt() -> None:
    batch = [
        pending(1, "a", 1, data={"n": 1, "crash": True}),
        pending(2, "a", 2),
        pending(3, "b", 1),
    ]
    result = plan(batch, decide=Flaky(times=1))
    assert [(d.ref, d.status) for d in result.decided] == [(3, OpStatus.SUCCEEDED)]
    assert [(d.ref, d.attempts) for d in result.deferred] == [(1, 1)]
    keys = {k.key[2]: k for k in result.keys}
    # The key waits for the first backoff (1 s; jitter 0.5 scales it by 1); nothing of it is done.
    assert keys["a"].retry_at == NOW + timedelta(seconds=1)
    assert keys["a"].done == 0 and not keys["a"].changed
    assert keys["b"].retry_at is None and keys["b"].changed
    assert result.retry_at == NOW + timedelta(seconds=1)


def test_after_its_last_attempt_a_crashing_write_fails_alone_and_the_key_goes_on() -> None:
    batch = [pending(1, "a", 1, data={"n": 1, "crash": True}, attempts=2), pending(2, "a", 2)]
    result = plan(batch, decide=Flaky(times=5))
    decided = {d.ref: d for d in result.decided}
    assert decided[1].status is OpStatus.FAILED
    assert decided[1].error is OpError.APPLY_FAILED
    assert decided[1].message == "TimeoutError: prices unavailable (failed 3 attempts)"
    assert decided[2].status is OpStatus.SUCCEEDED and decided[2].version == 1
    assert not result.deferred and result.retry_at is None


def test_a_retry_that_succeeds_applies_in_order() -> None:
    batch = [pending(1, "a", 1, data={"n": 1, "crash": True}, attempts=1), pending(2, "a", 2)]
    result = plan(batch, decide=Flaky(times=0))
    assert [(d.ref, d.version) for d in result.decided] == [(1, 1), (2, 2)]


def test_cancelled_and_expired_jobs_cancel_their_operations_without_running_rules() -> None:
    def never(state: ResourceState, op: Operation) -> Outcome:
        raise AssertionError("operator code ran for a cancelled operation")

    batch = [
        pending(1, "a", 1, job_id="cancelled"),
        pending(2, "b", 1, job_id="expired"),
    ]
    jobs = {
        "cancelled": JobFacts(cancelled=True),
        "expired": JobFacts(deadline=NOW - timedelta(seconds=1)),
    }
    result = plan(batch, jobs=jobs, decide=never)
    decided = {d.ref: d for d in result.decided}
    assert decided[1].status is OpStatus.CANCELLED and decided[1].error is None
    assert decided[2].status is OpStatus.CANCELLED
    assert decided[2].error is OpError.DEADLINE_EXCEEDED
    assert result.tallies[("cancelled", 3)].cancelled == 1
    assert all(k.done == 1 and not k.changed for k in result.keys)


def test_effects_carry_the_states_around_each_change() -> None:
    def with_effect(state: ResourceState, op: Operation) -> Outcome:
        outcome = apply_operation(state, op)
        return Outcome(outcome.state, effects=("notify",))

    batch = [pending(1, "a", 1, data={"n": 1}), pending(2, "a", 2, data={"n": 2})]
    result = plan(batch, decide=with_effect)
    assert [(e.version, e.before, e.after, e.operation_id) for e in result.effects] == [
        (1, None, {"n": 1}, "job-a.1"),
        (2, {"n": 1}, {"n": 2}, "job-a.2"),
    ]
    assert all(e.partition == 3 for e in result.effects)


def test_a_sync_write_of_an_absent_key_is_not_found_before_its_preconditions() -> None:
    patch = Operation(OpKind.PATCH, ResourceKey("item", "a"), {"n": 1})
    with pytest.raises(NotFound):
        plan_write(None, patch, Preconditions(frozenset({1})), plain)
    with pytest.raises(NotFound):
        plan_write(ResourceState(4, None), patch, Preconditions(), plain)


def test_a_sync_write_checks_preconditions_against_the_locked_state() -> None:
    put = Operation(OpKind.UPSERT, ResourceKey("item", "a"), {"n": 1})
    with pytest.raises(PreconditionFailed):
        plan_write(ResourceState(2, {"n": 0}), put, Preconditions(frozenset({1})), plain)
    with pytest.raises(PreconditionFailed):
        plan_write(ResourceState(2, {"n": 0}), put, Preconditions(if_none_match=True), plain)
    outcome = plan_write(ResourceState(2, {"n": 0}), put, Preconditions(frozenset({2})), plain)
    assert outcome.state == ResourceState(3, {"n": 1})


def test_a_sync_write_turns_rule_answers_into_problems_and_crashes_into_retries() -> None:
    put = Operation(OpKind.UPSERT, ResourceKey("item", "a"), {"n": 1})

    def refuse(change: Change) -> None:
        raise RuleRejected("no")

    def rejecting(state: ResourceState, op: Operation) -> Outcome:
        return apply_operation(state, op, (refuse,))

    def crashing(state: ResourceState, op: Operation) -> Outcome:
        raise ConnectionError("rule backend down")

    def failing(state: ResourceState, op: Operation) -> Outcome:
        return Outcome(state, OpError.APPLY_FAILED, "gave up")

    with pytest.raises(RuleRejectedWrite):
        plan_write(None, put, Preconditions(), rejecting)
    with pytest.raises(OperatorCrashed) as crashed:
        plan_write(None, put, Preconditions(), crashing)
    assert isinstance(crashed.value.error, ConnectionError)
    with pytest.raises(ApplyFailed):
        plan_write(None, put, Preconditions(), failing)
