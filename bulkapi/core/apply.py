"""Applying one write to one resource: the single rule both the sync and bulk paths use."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bulkapi.core.merge_patch import merge_patch
from bulkapi.core.operations import Operation, OpError, OpKind


@dataclass(frozen=True, slots=True)
class ResourceState:
    """A key's committed state; ``data is None`` means absent (never written or deleted)."""

    version: int
    data: dict[str, Any] | None

    @property
    def exists(self) -> bool:
        return self.data is not None


ABSENT = ResourceState(version=0, data=None)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one write: the new state, or why it failed (state unchanged)."""

    state: ResourceState
    error: OpError | None = None
    message: str | None = None
    #: Field errors behind a rejection, in marshmallow's shape (schema checks).
    details: Mapping[str, Any] | None = None
    #: Names of the side effects this write triggers, in their declared order.
    effects: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.error is None


class RuleRejected(Exception):
    """Raised by an operator's business rule to refuse one write (``rule_rejected``)."""

    def __init__(self, message: str, errors: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Optional field errors (marshmallow's shape) a caller can show per field.
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Change:
    """What a business rule sees: the write, and the document before and after it."""

    operation: Operation
    current: dict[str, Any] | None
    proposed: dict[str, Any] | None


#: A business rule: returns to accept, raises ``RuleRejected`` to refuse. Any other
#: exception is a failure of the rule itself, which the caller may retry.
Rule = Callable[[Change], None]


def apply_operation(state: ResourceState, op: Operation, rules: Sequence[Rule] = ()) -> Outcome:
    """Apply ``op`` to ``state``; every applied write bumps the version by exactly one.

    Versions continue across deletes (a tombstone keeps its version), so a version is
    never reused for a key. Rules run last, on the would-be result.
    """
    outcome = _apply(state, op)
    if not outcome.succeeded or not rules:
        return outcome
    change = Change(op, state.data, outcome.state.data)
    try:
        for rule in rules:
            rule(change)
    except RuleRejected as rejection:
        return Outcome(state, OpError.RULE_REJECTED, rejection.message, rejection.errors)
    return outcome


def _apply(state: ResourceState, op: Operation) -> Outcome:
    if op.if_version is not None and op.if_version != state.version:
        return Outcome(
            state,
            OpError.VERSION_MISMATCH,
            f"expected version {op.if_version}, found {state.version}",
        )
    if op.kind is OpKind.UPSERT:
        return Outcome(ResourceState(state.version + 1, op.data))
    if not state.exists:
        return Outcome(state, OpError.NOT_FOUND, f"{op.key.type}/{op.key.id} does not exist")
    if op.kind is OpKind.PATCH:
        return Outcome(ResourceState(state.version + 1, merge_patch(state.data, op.data)))
    return Outcome(ResourceState(state.version + 1, None))
