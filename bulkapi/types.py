"""Resource types an operator registers (``BULKAPI_TYPES``), and applying writes with them.

A types module is any importable module with a ``TYPES`` iterable of ``ResourceType``.
"""

from __future__ import annotations

import importlib
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

from bulkapi.core.apply import Outcome, ResourceState, Rule, apply_operation
from bulkapi.core.operations import Operation, OpError


@dataclass(frozen=True)
class ResourceType:
    name: str
    #: Business rules run at apply time, in order, on the current and proposed document.
    rules: tuple[Rule, ...] = ()


class TypeRegistry:
    def __init__(self, types: Iterable[ResourceType] = ()) -> None:
        self._types = {resource_type.name: resource_type for resource_type in types}

    def get(self, name: str) -> ResourceType | None:
        return self._types.get(name)

    def rules_for(self, name: str) -> tuple[Rule, ...]:
        found = self._types.get(name)
        return () if found is None else found.rules


def load_registry(module_path: str | None) -> TypeRegistry:
    if not module_path:
        return TypeRegistry()
    module = importlib.import_module(module_path)
    return TypeRegistry(module.TYPES)


@dataclass(frozen=True)
class Applier:
    """Applies one write with its type's rules; a rule that crashes is retried with
    exponential backoff and jitter, then the write fails with ``apply_failed`` alone.

    Retrying in place keeps the key's order without any bookkeeping: nothing later on
    the same key can run before this write is decided.
    """

    registry: TypeRegistry
    attempts: int = 3
    first_backoff: float = 0.05

    def __call__(self, state: ResourceState, operation: Operation) -> Outcome:
        rules = self.registry.rules_for(operation.key.type)
        for attempt in range(1, self.attempts):
            try:
                return apply_operation(state, operation, rules)
            except Exception:
                delay = self.first_backoff * 2 ** (attempt - 1)
                time.sleep(delay * (0.5 + random.random()))
        try:
            return apply_operation(state, operation, rules)
        except Exception as error:
            return Outcome(
                state,
                OpError.APPLY_FAILED,
                f"{type(error).__name__}: {error} (failed {self.attempts} attempts)",
            )
