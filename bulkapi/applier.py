"""Applying one write with its type's rules, and naming the side effects it triggers."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass

from bulkapi.core.apply import Change, Outcome, ResourceState, apply_operation
from bulkapi.core.operations import Operation, OpError
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
        effects = self.registry.effects_for(Change(operation, state.data, outcome.state.data))
        return dataclasses.replace(outcome, effects=effects) if effects else outcome
