"""The Applier: a crashing business rule is retried in place, then fails the write alone."""

from __future__ import annotations

import pytest

from bulkapi.applier import Applier
from bulkapi.core.apply import ABSENT, Change, ResourceState, RuleRejected
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpError, OpKind
from bulkapi.registry import TypeRegistry
from bulkapi.types import ResourceType

UPSERT = Operation(OpKind.UPSERT, ResourceKey("order", "o-1"), {"total": 5})


class PricesUnavailable(Exception):
    pass


class FlakyRule:
    """Crashes on its first ``failures`` calls, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, change: Change) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise PricesUnavailable(f"call {self.calls}")


def applier_with(rule: FlakyRule | None, attempts: int = 3) -> Applier:
    rules = () if rule is None else (rule,)
    return Applier(TypeRegistry([ResourceType("order", rules=rules)]), attempts, first_backoff=0)


def test_a_rule_that_crashes_twice_then_accepts_succeeds_after_retries() -> None:
    rule = FlakyRule(failures=2)
    outcome = applier_with(rule, attempts=3)(ABSENT, UPSERT)
    assert outcome.succeeded
    assert outcome.state == ResourceState(1, {"total": 5})
    assert rule.calls == 3


def test_a_rule_that_always_crashes_fails_with_apply_failed_after_all_attempts() -> None:
    rule = FlakyRule(failures=10**6)
    state = ResourceState(4, {"total": 1})
    outcome = applier_with(rule, attempts=3)(state, UPSERT)
    assert outcome.error is OpError.APPLY_FAILED
    assert outcome.state == state
    assert rule.calls == 3
    assert outcome.message is not None
    assert "PricesUnavailable" in outcome.message
    assert "call 3" in outcome.message
    assert "3 attempts" in outcome.message


def test_a_single_attempt_applier_does_not_retry() -> None:
    rule = FlakyRule(failures=1)
    outcome = applier_with(rule, attempts=1)(ABSENT, UPSERT)
    assert outcome.error is OpError.APPLY_FAILED
    assert rule.calls == 1


def test_a_rule_rejection_is_an_answer_and_is_not_retried() -> None:
    calls: list[Change] = []

    def refuse(change: Change) -> None:
        calls.append(change)
        raise RuleRejected("orders are frozen")

    applier = Applier(TypeRegistry([ResourceType("order", rules=(refuse,))]), 3, first_backoff=0)
    outcome = applier(ABSENT, UPSERT)
    assert outcome.error is OpError.RULE_REJECTED
    assert outcome.message == "orders are frozen"
    assert len(calls) == 1


def test_rules_of_other_types_do_not_apply() -> None:
    rule = FlakyRule(failures=10**6)
    applier = Applier(TypeRegistry([ResourceType("invoice", rules=(rule,))]), 3, first_backoff=0)
    assert applier(ABSENT, UPSERT).succeeded
    assert rule.calls == 0


@pytest.mark.parametrize("registry", [TypeRegistry(), TypeRegistry([ResourceType("order")])])
def test_a_type_without_rules_applies_plainly(registry: TypeRegistry) -> None:
    outcome = Applier(registry, 3, first_backoff=0)(ABSENT, UPSERT)
    assert outcome.state == ResourceState(1, {"total": 5})
