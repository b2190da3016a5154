"""Applying one write to one resource: versions, tombstones, preconditions, rules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkapi.core.apply import (
    ABSENT,
    Change,
    ResourceState,
    RuleRejected,
    apply_operation,
)
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpError, OpKind

KEY = ResourceKey("order", "o-1")


def upsert(data: dict[str, Any], if_version: int | None = None) -> Operation:
    return Operation(OpKind.UPSERT, KEY, data, if_version)


def patch(data: dict[str, Any], if_version: int | None = None) -> Operation:
    return Operation(OpKind.PATCH, KEY, data, if_version)


def delete(if_version: int | None = None) -> Operation:
    return Operation(OpKind.DELETE, KEY, None, if_version)


def test_upsert_of_an_absent_resource_creates_it_at_version_1() -> None:
    outcome = apply_operation(ABSENT, upsert({"total": 10}))
    assert outcome.succeeded
    assert outcome.error is None
    assert outcome.state == ResourceState(1, {"total": 10})
    assert outcome.state.exists


def test_upsert_of_an_existing_resource_replaces_the_document_and_adds_one() -> None:
    state = ResourceState(4, {"total": 10, "note": "old"})
    outcome = apply_operation(state, upsert({"total": 12}))
    assert outcome.succeeded
    assert outcome.state == ResourceState(5, {"total": 12})


def test_patch_merges_into_the_current_document_and_adds_one() -> None:
    state = ResourceState(2, {"total": 10, "note": "old", "lines": {"a": 1, "b": 2}})
    outcome = apply_operation(state, patch({"note": None, "lines": {"b": 3}}))
    assert outcome.succeeded
    assert outcome.state == ResourceState(3, {"total": 10, "lines": {"a": 1, "b": 3}})


@pytest.mark.parametrize("operation", [patch({"a": 1}), delete()], ids=["patch", "delete"])
def test_patch_or_delete_of_a_never_written_resource_is_not_found_and_changes_nothing(
    operation: Operation,
) -> None:
    outcome = apply_operation(ABSENT, operation)
    assert not outcome.succeeded
    assert outcome.error is OpError.NOT_FOUND
    assert outcome.message
    assert outcome.state == ABSENT


@pytest.mark.parametrize("operation", [patch({"a": 1}), delete()], ids=["patch", "delete"])
def test_patch_or_delete_of_a_deleted_resource_is_not_found_and_keeps_the_tombstone(
    operation: Operation,
) -> None:
    tombstone = ResourceState(7, None)
    outcome = apply_operation(tombstone, operation)
    assert outcome.error is OpError.NOT_FOUND
    assert outcome.state == tombstone


def test_delete_leaves_a_tombstone_that_holds_the_next_version() -> None:
    outcome = apply_operation(ResourceState(3, {"a": 1}), delete())
    assert outcome.succeeded
    assert outcome.state == ResourceState(4, None)
    assert not outcome.state.exists


def test_recreating_after_a_delete_continues_the_version_instead_of_reusing_one() -> None:
    created = apply_operation(ABSENT, upsert({"a": 1})).state
    deleted = apply_operation(created, delete()).state
    recreated = apply_operation(deleted, upsert({"a": 2})).state
    assert [created.version, deleted.version, recreated.version] == [1, 2, 3]
    assert recreated.data == {"a": 2}


@pytest.mark.parametrize(
    "operation", [upsert({"a": 2}, 5), patch({"a": 2}, 5), delete(5)], ids=lambda o: o.kind
)
def test_if_version_equal_to_the_current_version_applies(operation: Operation) -> None:
    outcome = apply_operation(ResourceState(5, {"a": 1}), operation)
    assert outcome.succeeded
    assert outcome.state.version == 6


@pytest.mark.parametrize(
    "operation",
    [upsert({"a": 2}, 4), patch({"a": 2}, 6), delete(0)],
    ids=lambda o: f"{o.kind}-{o.if_version}",
)
def test_if_version_different_from_the_current_version_is_a_mismatch_and_changes_nothing(
    operation: Operation,
) -> None:
    state = ResourceState(5, {"a": 1})
    outcome = apply_operation(state, operation)
    assert outcome.error is OpError.VERSION_MISMATCH
    assert outcome.message
    assert outcome.state == state


def test_if_version_0_creates_only_when_the_resource_was_never_written() -> None:
    assert apply_operation(ABSENT, upsert({"a": 1}, 0)).state == ResourceState(1, {"a": 1})
    existing = ResourceState(1, {"a": 1})
    assert apply_operation(existing, upsert({"a": 2}, 0)).error is OpError.VERSION_MISMATCH


def test_if_version_is_checked_before_existence() -> None:
    outcome = apply_operation(ABSENT, patch({"a": 1}, 3))
    assert outcome.error is OpError.VERSION_MISMATCH


def test_a_rule_sees_the_current_and_the_proposed_document() -> None:
    seen: list[Change] = []
    operation = patch({"status": "paid"})
    outcome = apply_operation(ResourceState(1, {"total": 10}), operation, [seen.append])
    assert outcome.succeeded
    assert seen == [Change(operation, {"total": 10}, {"total": 10, "status": "paid"})]


def test_a_rule_sees_no_current_document_on_create_and_no_proposed_one_on_delete() -> None:
    seen: list[Change] = []
    created = apply_operation(ABSENT, upsert({"a": 1}), [seen.append]).state
    apply_operation(created, delete(), [seen.append])
    assert [(change.current, change.proposed) for change in seen] == [
        (None, {"a": 1}),
        ({"a": 1}, None),
    ]


def test_every_rule_runs_in_order_when_all_accept() -> None:
    calls: list[str] = []
    rules = [lambda _change: calls.append("first"), lambda _change: calls.append("second")]
    assert apply_operation(ABSENT, upsert({"a": 1}), rules).succeeded
    assert calls == ["first", "second"]


def test_a_rule_rejection_fails_the_write_with_rule_rejected_and_changes_nothing() -> None:
    def no_negative_totals(change: Change) -> None:
        if change.proposed is not None and change.proposed["total"] < 0:
            raise RuleRejected("total must not be negative")

    state = ResourceState(2, {"total": 10})
    outcome = apply_operation(state, patch({"total": -1}), [no_negative_totals])
    assert outcome.error is OpError.RULE_REJECTED
    assert outcome.message == "total must not be negative"
    assert outcome.state == state


def test_rules_are_not_consulted_when_the_write_already_failed() -> None:
    seen: list[Change] = []
    outcome = apply_operation(ABSENT, delete(), [seen.append])
    assert outcome.error is OpError.NOT_FOUND
    assert seen == []


def test_a_rule_raising_anything_else_propagates_for_the_caller_to_retry() -> None:
    class RuleCrashed(Exception):
        pass

    def crashing(_change: Change) -> None:
        raise RuleCrashed("database of prices unreachable")

    with pytest.raises(RuleCrashed):
        apply_operation(ResourceState(1, {"a": 1}), upsert({"a": 2}), [crashing])


def test_applying_does_not_mutate_the_state_or_the_operation() -> None:
    state = ResourceState(1, {"a": {"b": 1}})
    operation = patch({"a": {"c": 2}})
    apply_operation(state, operation)
    assert state.data == {"a": {"b": 1}}
    assert operation.data == {"a": {"c": 2}}


small_documents = st.dictionaries(
    st.sampled_from(["a", "b", "reject"]), st.none() | st.integers(-3, 3), max_size=3
)
operations = st.builds(
    Operation,
    st.sampled_from(list(OpKind)),
    st.just(KEY),
    small_documents,
    st.one_of(st.none(), st.none(), st.none(), st.integers(min_value=0, max_value=6)),
).map(
    lambda op: Operation(op.kind, op.key, None, op.if_version) if op.kind is OpKind.DELETE else op
)


def _reject_flagged(change: Change) -> None:
    if change.proposed is not None and change.proposed.get("reject") is not None:
        raise RuleRejected("flagged")


@settings(max_examples=150, deadline=None)
@given(st.lists(operations, max_size=25))
def test_any_sequence_of_writes_adds_exactly_one_version_per_applied_write(
    sequence: list[Operation],
) -> None:
    state = ABSENT
    applied_versions: list[int] = []
    for operation in sequence:
        outcome = apply_operation(state, operation, [_reject_flagged])
        if outcome.succeeded:
            assert outcome.state.version == state.version + 1
            applied_versions.append(outcome.state.version)
        else:
            assert outcome.state == state
        state = outcome.state
    assert applied_versions == list(range(1, len(applied_versions) + 1))
    assert state.version == len(applied_versions)
