"""Applying one write with its type's rules, and naming the side effects it triggers."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass

import orjson

from bulkapi.core.apply import Change, Outcome, ResourceState, apply_operation
from bulkapi.core.operations import Operation, OpError, OpKind
from bulkapi.registry import TypeRegistry


@dataclass(frozen=True)
class Applier:
    """Applies one write; operator code that crashes (a rule, an effect's condition) is
    retried with exponential backoff and jitter, then the write fails with
    ``apply_failed`` alone.

    Retrying in place keeps the key's order without any bookkeeping: nothing later on
    the same key can run before this write is decided.
    """

    registry: TypeRegistry
    attempts: int = 3
    first_backoff: float = 0.05
    #: Largest serialized document a write may leave behind (None: no limit). Upserts
    #: are held to it at admission; a patch's result is known only here.
    max_document_bytes: int | None = None

    def __call__(self, state: ResourceState, operation: Operation) -> Outcome:
        for attempt in range(1, self.attempts):
            try:
                return self._apply(state, operation)
            except Exception:
                delay = self.first_backoff * 2 ** (attempt - 1)
                time.sleep(delay * (0.5 + random.random()))
        try:
            return self._apply(state, operation)
        except Exception as error:
            return Outcome(
                state,
                OpError.APPLY_FAILED,
                f"{type(error).__name__}: {error} (failed {self.attempts} attempts)",
            )

    def _apply(self, state: ResourceState, operation: Operation) -> Outcome:
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
