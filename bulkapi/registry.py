"""The registered resource types: loading them, checking documents, finding effects.

Schema checks happen before anything is recorded (sync writes, bulk admission), so a
bad document costs a 422 and nothing else. A patch is checked twice: its own values at
admission (a merge patch is a partial document), and the merged result when it is
applied, because only then is the document it patches known.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from marshmallow import Schema

from bulkapi.core.apply import Change, Rule, RuleRejected
from bulkapi.core.errors import ApplyFailed, UnknownType, ValidationFailed
from bulkapi.core.keys import is_valid_type
from bulkapi.core.operations import Operation, OpKind
from bulkapi.types import Effect, ResourceType

logger = logging.getLogger(__name__)

#: Effect names are stored and shown: keep them short identifiers.
_EFFECT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_REMOVED_REQUIRED = "A required field cannot be removed."


def _without_nulls(patch: dict[str, Any]) -> dict[str, Any]:
    """A merge patch's values: nulls remove members, they are not values to check."""
    return {
        name: _without_nulls(value) if isinstance(value, dict) else value
        for name, value in patch.items()
        if value is not None
    }


class RegisteredType:
    """A ``ResourceType`` made ready to use: schema instantiated, effects indexed."""

    def __init__(self, declared: ResourceType) -> None:
        if not is_valid_type(declared.name):
            raise ValueError(f"resource type name {declared.name!r} is not a valid type")
        schema = declared.schema
        self.declared = declared
        self.name = declared.name
        self.schema: Schema | None = schema() if isinstance(schema, type) else schema
        self.effects: dict[str, tuple[int, Effect]] = {}
        for position, effect in enumerate(declared.effects):
            if not _EFFECT_NAME.match(effect.name):
                raise ValueError(f"effect name {effect.name!r} of {self.name} is not valid")
            if effect.name in self.effects:
                raise ValueError(f"{self.name} declares the effect {effect.name!r} twice")
            self.effects[effect.name] = (position, effect)
        checks: tuple[Rule, ...] = (self._check_patched,) if self.schema is not None else ()
        self.rules: tuple[Rule, ...] = checks + tuple(declared.rules)

    def data_errors(self, kind: OpKind, data: dict[str, Any]) -> dict[str, Any]:
        """Field errors of a write's document (marshmallow's shape); empty when valid.

        A schema that crashes (operator code: a validator raising something other than
        ``ValidationError``) is ``ApplyFailed``, a 503 that names the type, not a 500.
        """
        if self.schema is None:
            return {}
        try:
            return self._schema_errors(self.schema, kind, data)
        except Exception as error:
            logger.exception("the %s schema crashed while checking a document", self.name)
            raise ApplyFailed(
                f"The {self.name} schema failed while checking the document"
                f" ({type(error).__name__}); nothing was recorded."
            ) from error

    @staticmethod
    def _schema_errors(schema: Schema, kind: OpKind, data: dict[str, Any]) -> dict[str, Any]:
        if kind is OpKind.UPSERT:
            return dict(schema.validate(data))
        errors = dict(schema.validate(_without_nulls(data), partial=True))
        for name, field in schema.fields.items():
            key = field.data_key or name
            if field.required and key in data and data[key] is None:
                errors.setdefault(key, []).append(_REMOVED_REQUIRED)
        return errors

    def _check_patched(self, change: Change) -> None:
        """After a patch, the whole document must still match the schema."""
        if change.operation.kind is not OpKind.PATCH or change.proposed is None:
            return
        assert self.schema is not None
        errors = self.schema.validate(change.proposed)
        if errors:
            fields = ", ".join(sorted(errors))
            raise RuleRejected(
                f"The patched document would not match the {self.name} schema ({fields}).",
                errors,
            )

    @property
    def is_passive(self) -> bool:
        """No business rules and no effects: an upsert's outcome then depends on nothing
        but the current version, which the store can handle without reading first."""
        return not self.declared.rules and not self.effects

    def triggered_effects(self, change: Change) -> tuple[str, ...]:
        return tuple(
            name
            for name, (_, effect) in self.effects.items()
            if effect.when is None or effect.when(change)
        )


class TypeRegistry:
    def __init__(self, types: Iterable[ResourceType] = (), *, strict: bool = False) -> None:
        self.strict = strict
        self._types: dict[str, RegisteredType] = {}
        for declared in types:
            if declared.name in self._types:
                raise ValueError(f"resource type {declared.name!r} is registered twice")
            self._types[declared.name] = RegisteredType(declared)

    def __iter__(self) -> Iterator[RegisteredType]:
        return iter(self._types.values())

    def get(self, name: str) -> RegisteredType | None:
        return self._types.get(name)

    def rules_for(self, name: str) -> tuple[Rule, ...]:
        found = self._types.get(name)
        return () if found is None else found.rules

    def effects_for(self, change: Change) -> tuple[str, ...]:
        found = self._types.get(change.operation.key.type)
        return () if found is None or not found.effects else found.triggered_effects(change)

    def effect(self, type_name: str, effect_name: str) -> tuple[int, Effect] | None:
        found = self._types.get(type_name)
        return None if found is None else found.effects.get(effect_name)

    def check_write(self, operation: Operation) -> None:
        """One sync write: 422 ``unknown_type`` (strict) or its document's field errors."""
        registered = self._types.get(operation.key.type)
        if registered is None:
            if self.strict:
                raise UnknownType(
                    f"Resource type {operation.key.type!r} is not registered.",
                    {"type": [_unknown(operation.key.type)]},
                )
            return
        if operation.data is not None:
            errors = registered.data_errors(operation.kind, operation.data)
            if errors:
                raise ValidationFailed(
                    f"The document does not match the {registered.name} schema.", errors
                )

    def check_operations(self, operations: Sequence[Operation]) -> None:
        """A bulk request: every unknown type, else every bad document, by op index."""
        if not self._types and not self.strict:
            return
        unknown = {
            str(index): {"type": [_unknown(op.key.type)]}
            for index, op in enumerate(operations)
            if self.strict and op.key.type not in self._types
        }
        if unknown:
            raise UnknownType(
                f"{len(unknown)} operation(s) name a resource type that is not registered.",
                unknown,
            )
        invalid: dict[str, Any] = {}
        for index, op in enumerate(operations):
            registered = self._types.get(op.key.type)
            if registered is not None and op.data is not None:
                errors = registered.data_errors(op.kind, op.data)
                if errors:
                    invalid[str(index)] = {"data": errors}
        if invalid:
            raise ValidationFailed(
                f"{len(invalid)} operation(s) do not match their type's schema.", invalid
            )


def _unknown(name: str) -> str:
    return f"Unknown resource type {name!r}."


def load_registry(module_path: str | None, *, strict: bool = False) -> TypeRegistry:
    """Import the operator's types module (from the working directory too, as gunicorn
    does, so ``BULKAPI_TYPES=mytypes`` finds ./mytypes.py)."""
    if not module_path:
        return TypeRegistry(strict=strict)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_path)
    declared = getattr(module, "TYPES", None)
    if declared is None:
        raise ValueError(f"types module {module_path!r} has no TYPES list")
    return TypeRegistry(declared, strict=strict)
