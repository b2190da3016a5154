"""Deciding one write with its type's schema and rules, and naming the effects it triggers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import orjson

from bulkapi.core.apply import Change, Outcome, ResourceState, apply_operation
from bulkapi.core.operations import Operation, OpError, OpKind
from bulkapi.registry import TypeRegistry


@dataclass(frozen=True)
class Applier:
    """The ``Decide`` both write paths hand to the planner.

    Operator code that crashes (a rule, an effect's condition) raises through here: the
    planner decides when to try again, so nothing is retried while locks are held.
    """

    registry: TypeRegistry
    #: Largest serialized document a write may leave behind (None: no limit). Upserts
    #: are held to it at admission; a patch's result is known only here.
    max_document_bytes: int | None = None

    def __call__(self, state: ResourceState, operation: Operation) -> Outcome:
        outcome = apply_operation(state, operation, self.registry.rules_for(operation.key.type))
        if not outcome.succeeded:
            return outcome
        if operation.kind is OpKind.PATCH and self.max_document_bytes is not None:
            size = len(orjson.dumps(outcome.state.data))
            if size > self.max_document_bytes:
                message = (
                    f"The patched document would take {size} bytes;"
                    f" documents take at most {self.max_document_bytes}."
                )
                return Outcome(state, OpError.RULE_REJECTED, message, {"_schema": [message]})
        effects = self.registry.effects_for(Change(operation, state.data, outcome.state.data))
        return dataclasses.replace(outcome, effects=effects) if effects else outcome

    def is_blind(self, operation: Operation) -> bool:
        """Whether the write's outcome cannot depend on the current document: an upsert
        of a type with no rules and no effects. Such a write needs no read before it."""
        if operation.kind is not OpKind.UPSERT:
            return False
        registered = self.registry.get(operation.key.type)
        return registered is None or registered.is_passive
