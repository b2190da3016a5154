"""The type registry: schema checks of writes and bulk requests, strict mode, effects."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import Schema, fields, validate

from bulkapi.core.apply import Change, ResourceState, apply_operation
from bulkapi.core.errors import UnknownType, ValidationFailed
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpError, OpKind
from bulkapi.registry import TypeRegistry, load_registry
from bulkapi.types import Effect, EffectEvent, ResourceType


class ItemSchema(Schema):
    count = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    label = fields.String()
    size = fields.Nested(
        Schema.from_dict({"w": fields.Integer(required=True), "h": fields.Integer()})
    )


def _noop(event: EffectEvent) -> None:
    pass


def _registry(strict: bool = False) -> TypeRegistry:
    return TypeRegistry(
        [
            ResourceType("item", schema=ItemSchema),
            ResourceType(
                "watched",
                effects=(
                    Effect("always", _noop),
                    Effect("on_delete", _noop, when=lambda change: change.proposed is None),
                ),
            ),
        ],
        strict=strict,
    )


def _op(kind: OpKind, rtype: str, data: dict[str, Any] | None) -> Operation:
    return Operation(kind, ResourceKey(rtype, "x"), data)


def test_an_upsert_is_checked_whole() -> None:
    registry = _registry()
    registry.check_write(_op(OpKind.UPSERT, "item", {"count": 1, "label": "a"}))
    with pytest.raises(ValidationFailed) as raised:
        registry.check_write(_op(OpKind.UPSERT, "item", {"label": "a"}))
    assert set(raised.value.errors) == {"count"}


def test_a_patch_is_checked_for_its_own_values_only() -> None:
    registry = _registry()
    registry.check_write(_op(OpKind.PATCH, "item", {"label": "b"}))
    registry.check_write(_op(OpKind.PATCH, "item", {"label": None}))  # removes an optional
    registry.check_write(_op(OpKind.PATCH, "item", {"size": {"h": None}}))  # nested removal
    with pytest.raises(ValidationFailed) as raised:
        registry.check_write(_op(OpKind.PATCH, "item", {"count": -2}))
    assert set(raised.value.errors) == {"count"}
    with pytest.raises(ValidationFailed) as raised:
        registry.check_write(_op(OpKind.PATCH, "item", {"count": None}))
    assert raised.value.errors == {"count": ["A required field cannot be removed."]}


def test_the_merged_patch_is_checked_when_applied() -> None:
    registry = _registry()
    state = ResourceState(1, {"count": 1, "size": {"w": 2, "h": 3}})
    patch = _op(OpKind.PATCH, "item", {"size": {"w": None}})  # passes at admission
    registry.check_write(patch)
    outcome = apply_operation(state, patch, registry.rules_for("item"))
    assert outcome.error is OpError.RULE_REJECTED
    assert outcome.state == state
    assert outcome.details is not None and "size" in outcome.details
    assert "size" in (outcome.message or "")


def test_a_bulk_request_names_every_bad_index_and_only_those() -> None:
    operations = [
        _op(OpKind.UPSERT, "item", {"count": 1}),
        _op(OpKind.UPSERT, "item", {"count": "1"}),
        _op(OpKind.UPSERT, "free", {"anything": True}),
        _op(OpKind.DELETE, "item", None),
        _op(OpKind.PATCH, "item", {"unknown_field": 1}),
    ]
    with pytest.raises(ValidationFailed) as raised:
        _registry().check_operations(operations)
    assert set(raised.value.errors) == {"1", "4"}
    assert set(raised.value.errors["4"]["data"]) == {"unknown_field"}


def test_strict_mode_refuses_unregistered_types_first() -> None:
    operations = [
        _op(OpKind.UPSERT, "item", {"count": "bad"}),
        _op(OpKind.UPSERT, "free", {}),
        _op(OpKind.DELETE, "gone", None),
    ]
    with pytest.raises(UnknownType) as raised:
        _registry(strict=True).check_operations(operations)
    assert set(raised.value.errors) == {"1", "2"}
    with pytest.raises(UnknownType):
        _registry(strict=True).check_write(_op(OpKind.DELETE, "free", None))
    _registry(strict=False).check_write(_op(OpKind.DELETE, "free", None))


def test_effects_are_named_in_declared_order_when_their_condition_holds() -> None:
    registry = _registry()
    key = ResourceKey("watched", "w")
    upsert = Operation(OpKind.UPSERT, key, {"a": 1})
    delete = Operation(OpKind.DELETE, key)
    assert registry.effects_for(Change(upsert, None, {"a": 1})) == ("always",)
    assert registry.effects_for(Change(delete, {"a": 1}, None)) == ("always", "on_delete")
    untouched = Operation(OpKind.UPSERT, ResourceKey("item", "i"), {"count": 1})
    assert registry.effects_for(Change(untouched, None, {"count": 1})) == ()
    assert registry.effect("watched", "on_delete") is not None
    assert registry.effect("watched", "nope") is None


@pytest.mark.parametrize(
    "types",
    [
        [ResourceType("Bad Name")],
        [ResourceType("dup"), ResourceType("dup")],
        [ResourceType("t", effects=(Effect("same", _noop), Effect("same", _noop)))],
        [ResourceType("t", effects=(Effect("Not-Valid", _noop),))],
    ],
)
def test_a_malformed_types_module_fails_at_start(types: list[ResourceType]) -> None:
    with pytest.raises(ValueError):
        TypeRegistry(types)


def test_load_registry_needs_a_types_list() -> None:
    assert list(load_registry(None)) == []
    with pytest.raises(ValueError, match="no TYPES"):
        load_registry("bulkapi.core.keys")
    with pytest.raises(ModuleNotFoundError):
        load_registry("no_such_module_here")
    assert {t.name for t in load_registry("examples.crm")} == {"lead", "org"}
