"""The example types module (examples/crm.py) as an operator would unit-test theirs."""

from __future__ import annotations

from typing import Any

import pytest

from bulkapi.core.apply import Change
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpKind
from bulkapi.registry import TypeRegistry
from examples import crm

REGISTRY = TypeRegistry(crm.TYPES)


def _errors(rtype: str, data: dict[str, Any], kind: OpKind = OpKind.UPSERT) -> dict[str, Any]:
    registered = REGISTRY.get(rtype)
    assert registered is not None
    return registered.data_errors(kind, data)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"score": "abc"}, "score"),
        ({"score": "5"}, "score"),
        ({"score": -1}, "score"),
        ({}, "score"),
        ({"score": 1, "status": "won"}, "status"),
        ({"score": 1, "email": "not-an-address"}, "email"),
    ],
)
def test_a_bad_lead_names_its_field(data: dict[str, Any], field: str) -> None:
    assert field in _errors("lead", data)


def test_a_good_lead_passes() -> None:
    assert _errors("lead", {"score": 0, "status": "qualified", "email": "a@example.com"}) == {}


@pytest.mark.parametrize("value", [1, 0, "true", "yes", None])
def test_org_allow_custom_sso_takes_only_json_booleans(value: Any) -> None:
    assert "allow_custom_sso" in _errors("org", {"name": "Acme", "allow_custom_sso": value})


def _org_change(before: dict[str, Any] | None, after: dict[str, Any] | None) -> Change:
    kind = OpKind.DELETE if after is None else OpKind.UPSERT
    return Change(Operation(kind, ResourceKey("org", "o"), after), before, after)


@pytest.mark.parametrize(
    ("before", "after", "unlinks"),
    [
        ({"name": "A", "allow_custom_sso": True}, {"name": "A", "allow_custom_sso": False}, True),
        ({"name": "A", "allow_custom_sso": False}, {"name": "A", "allow_custom_sso": False}, False),
        (None, {"name": "A", "allow_custom_sso": False}, False),
        ({"name": "A"}, {"name": "A", "allow_custom_sso": False}, False),
        ({"name": "A", "allow_custom_sso": True}, {"name": "A"}, False),
        ({"name": "A", "allow_custom_sso": True}, None, False),
    ],
)
def test_unlink_sso_runs_only_when_custom_sso_switches_off(
    before: dict[str, Any] | None, after: dict[str, Any] | None, unlinks: bool
) -> None:
    expected = ("unlink_sso",) if unlinks else ()
    assert REGISTRY.effects_for(_org_change(before, after)) == expected
