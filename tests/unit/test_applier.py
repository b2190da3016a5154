"""The Applier: the operator's schema, rules and effects, decided once per call."""

from __future__ import annotations

import pytest

from bulkapi.applier import Applier
from bulkapi.core.apply import ABSENT, Change, ResourceState, RuleRejected
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpError, OpKind
from bulkapi.registry import TypeRegistry
from bulkapi.types import Effect, ResourceType

UPSERT = Operation(OpKind.UPSERT, ResourceKey("order", "o-1"), {"total": 5})


class PricesUnavailable(Exception):
    pass


def test_a_crashing_rule_raises_through_so_the_planner_decides_when_to_retry() -> None:
    def crash(change: Change) -> None:
        raise PricesUnavailable("down")

    applier = Applier(TypeRegistry([ResourceType("order", rules=(crash,))]))
    with pytest.raises(PricesUnavailable):
        applier(ABSENT, UPSERT)


def test_a_rule_rejection_is_an_answer_not_a_crash() -> None:
    def refuse(change: Change) -> None:
        raise RuleRejected("orders are frozen")

    outcome = Applier(TypeRegistry([ResourceType("order", rules=(refuse,))]))(ABSENT, UPSERT)
    assert outcome.error is OpError.RULE_REJECTED
    assert outcome.message == "orders are frozen"


def test_a_patch_that_grows_past_the_document_limit_is_rejected() -> None:
    applier = Applier(TypeRegistry([]), max_document_bytes=20)
    patch = Operation(OpKind.PATCH, ResourceKey("order", "o-1"), {"note": "x" * 30})
    outcome = applier(ResourceState(1, {"total": 5}), patch)
    assert outcome.error is OpError.RULE_REJECTED
    assert outcome.state == ResourceState(1, {"total": 5})


def test_effects_are_named_in_declared_order_when_their_condition_holds() -> None:
    types = TypeRegistry(
        [
            ResourceType(
                "order",
                effects=(
                    Effect("notify", handler=lambda _: None),
                    Effect("bill", handler=lambda _: None, when=lambda c: c.current is None),
                ),
            )
        ]
    )
    applier = Applier(types)
    assert applier(ABSENT, UPSERT).effects == ("notify", "bill")
    assert applier(ResourceState(1, {"total": 1}), UPSERT).effects == ("notify",)


def test_only_upserts_of_types_without_rules_or_effects_are_blind() -> None:
    types = TypeRegistry(
        [
            ResourceType("plain"),
            ResourceType("ruled", rules=(lambda change: None,)),
            ResourceType("effected", effects=(Effect("e", handler=lambda _: None),)),
        ]
    )
    applier = Applier(types)

    def blind(kind: OpKind, rtype: str) -> bool:
        return applier.is_blind(Operation(kind, ResourceKey(rtype, "x"), {}))

    assert blind(OpKind.UPSERT, "plain")
    assert blind(OpKind.UPSERT, "undeclared")
    assert not blind(OpKind.PATCH, "plain")
    assert not blind(OpKind.UPSERT, "ruled")
    assert not blind(OpKind.UPSERT, "effected")
