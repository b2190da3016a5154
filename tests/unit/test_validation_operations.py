"""Bulk admission of operations: every problem reported at once, under the op's index."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkapi.core.errors import DuplicateResources, TooManyOperations, ValidationFailed
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpKind
from bulkapi.core.validation import (
    AdmissionLimits,
    check_document,
    parse_keys,
    parse_operations,
)

LIMITS = AdmissionLimits(max_operations=10, max_document_bytes=200, max_document_depth=4)
serialize = orjson.dumps


def op(rid: str = "o-1", **fields: Any) -> dict[str, Any]:
    return {"op": "upsert", "type": "order", "id": rid, "data": {"total": 1}, **fields}


def nested(depth: int) -> dict[str, Any]:
    """An object whose objects nest ``depth`` levels deep (the outer one is level 1)."""
    document: dict[str, Any] = {}
    for _ in range(depth - 1):
        document = {"n": document}
    return document


def field_errors(items: list[Any]) -> dict[str, Any]:
    with pytest.raises(ValidationFailed) as raised:
        parse_operations(items, LIMITS, serialize)
    assert type(raised.value) is ValidationFailed
    assert raised.value.code == "validation_error"
    return raised.value.errors


def test_valid_operations_become_operations_in_request_order() -> None:
    items = [
        op("o-1"),
        {"op": "patch", "type": "order", "id": "o-2", "data": {"total": None}, "if_version": 3},
        {"op": "delete", "type": "customer", "id": "o-1", "if_version": 0},
    ]
    assert parse_operations(items, LIMITS, serialize) == [
        Operation(OpKind.UPSERT, ResourceKey("order", "o-1"), {"total": 1}),
        Operation(OpKind.PATCH, ResourceKey("order", "o-2"), {"total": None}, 3),
        Operation(OpKind.DELETE, ResourceKey("customer", "o-1"), None, 0),
    ]


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (op(colour="red"), "colour"),
        ({k: v for k, v in op().items() if k != "op"}, "op"),
        (op(op="merge"), "op"),
        (op(op="UPSERT"), "op"),
        (op(op=1), "op"),
        (op(type="Order"), "type"),
        (op(type="1order"), "type"),
        (op(type="o" * 65), "type"),
        ({k: v for k, v in op().items() if k != "type"}, "type"),
        (op(id="a/b"), "id"),
        (op(id=""), "id"),
        (op(id="x" * 129), "id"),
        (op(id=7), "id"),
        ({"op": "upsert", "type": "order", "id": "o-1"}, "data"),
        ({"op": "patch", "type": "order", "id": "o-1"}, "data"),
        ({"op": "delete", "type": "order", "id": "o-1", "data": {}}, "data"),
        ({"op": "delete", "type": "order", "id": "o-1", "data": None}, "data"),
        (op(data=[1, 2]), "data"),
        (op(data="text"), "data"),
        (op(data=None), "data"),
        (op(if_version=True), "if_version"),
        (op(if_version=False), "if_version"),
        (op(if_version=-1), "if_version"),
        (op(if_version="3"), "if_version"),
        (op(if_version=3.0), "if_version"),
        (op(data={"note": "x" * 300}), "data"),
        (op(data={"note": "a\x00b"}), "data"),
        (op(data={"a\x00b": 1}), "data"),
        (op(data=nested(5)), "data"),
        (op(data={"list": [[[[1]]]]}), "data"),
    ],
    ids=[
        "unknown-field",
        "missing-op",
        "unknown-op",
        "uppercase-op",
        "non-string-op",
        "uppercase-type",
        "type-leading-digit",
        "type-65-chars",
        "missing-type",
        "id-with-slash",
        "empty-id",
        "id-129-chars",
        "non-string-id",
        "upsert-without-data",
        "patch-without-data",
        "delete-with-data",
        "delete-with-null-data",
        "array-data",
        "string-data",
        "null-data-on-upsert",
        "if-version-true",
        "if-version-false",
        "if-version-negative",
        "if-version-string",
        "if-version-float",
        "document-too-large",
        "nul-in-value",
        "nul-in-key",
        "objects-nested-too-deep",
        "arrays-nested-too-deep",
    ],
)
def test_each_invalid_field_is_reported_under_the_op_index_and_field(
    item: dict[str, Any], field: str
) -> None:
    errors = field_errors([op("first"), item])
    assert list(errors) == ["1"]
    assert list(errors["1"]) == [field]
    assert errors["1"][field]
    assert all(isinstance(message, str) and message for message in errors["1"][field])


@pytest.mark.parametrize("item", [None, 1, "op", ["upsert"]], ids=["null", "int", "str", "list"])
def test_an_operation_that_is_not_an_object_is_reported_under_its_index(item: Any) -> None:
    errors = field_errors([op("first"), op("second"), item])
    assert list(errors) == ["2"]
    assert list(errors["2"]) == ["_schema"]


def test_an_operation_with_several_problems_reports_each_field() -> None:
    errors = field_errors([{"op": "delete", "type": "X", "id": "", "data": {}, "if_version": -2}])
    assert set(errors["0"]) == {"type", "id", "data", "if_version"}


def test_every_invalid_operation_is_reported_at_once() -> None:
    items = [
        op("bad-0", op="nope"),
        op("ok-1"),
        op("bad/2"),
        op("ok-3"),
        op("bad-4", if_version=-1),
    ]
    errors = field_errors(items)
    assert set(errors) == {"0", "2", "4"}
    assert set(errors["0"]) == {"op"}
    assert set(errors["2"]) == {"id"}
    assert set(errors["4"]) == {"if_version"}


def test_a_document_at_the_size_limit_is_accepted_and_one_byte_more_is_not() -> None:
    fits = {"note": "x" * (LIMITS.max_document_bytes - len(serialize({"note": ""})))}
    assert len(serialize(fits)) == LIMITS.max_document_bytes
    assert check_document(fits, LIMITS, serialize) == []
    too_big = {"note": fits["note"] + "x"}
    assert check_document(too_big, LIMITS, serialize)


def test_a_document_at_the_depth_limit_is_accepted_and_one_level_more_is_not() -> None:
    assert check_document(nested(LIMITS.max_document_depth), LIMITS, serialize) == []
    assert check_document(nested(LIMITS.max_document_depth + 1), LIMITS, serialize)


def test_a_document_nested_far_beyond_the_limit_is_rejected_without_recursing() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert check_document({"deep": deep}, LIMITS, serialize)


def test_text_that_spells_a_backslash_u0000_escape_is_not_a_nul_character() -> None:
    # A literal backslash followed by "u0000" is ordinary text that PostgreSQL stores fine;
    # only the U+0000 character itself is refused.
    document = {"path": "C:\\u0000\\file", "pattern": "\\\\u0000"}
    assert not any("\x00" in text for text in document.values())
    assert check_document(document, LIMITS, serialize) == []


def test_null_if_version_means_no_precondition() -> None:
    (operation,) = parse_operations([op(if_version=None)], LIMITS, serialize)
    assert operation.if_version is None


def test_an_empty_request_is_a_validation_error() -> None:
    errors = field_errors([])
    assert "operations" in errors


def test_the_same_resource_twice_is_a_duplicate_listing_every_index() -> None:
    items = [
        op("a"),
        op("b"),
        {"op": "delete", "type": "order", "id": "a"},
        op("c"),
        {"op": "patch", "type": "order", "id": "b", "data": {}},
        op("a"),
        {"op": "upsert", "type": "customer", "id": "a", "data": {}},
    ]
    with pytest.raises(DuplicateResources) as raised:
        parse_operations(items, LIMITS, serialize)
    error = raised.value
    assert error.code == "duplicate_resource"
    duplicates = error.extra["duplicates"]
    assert sorted(duplicates, key=lambda d: d["id"]) == [
        {"type": "order", "id": "a", "indexes": [0, 2, 5]},
        {"type": "order", "id": "b", "indexes": [1, 4]},
    ]
    assert set(error.errors) == {"0", "1", "2", "4", "5"}


def test_invalid_operations_are_reported_before_duplicates() -> None:
    errors = field_errors([op("a"), op("a"), op("b", op="nope")])
    assert set(errors) == {"2"}


def test_exactly_the_maximum_number_of_operations_is_accepted() -> None:
    items = [op(f"o-{n}") for n in range(LIMITS.max_operations)]
    assert len(parse_operations(items, LIMITS, serialize)) == LIMITS.max_operations


class _ValidThenExplode(list[Any]):
    """Valid ops, iterated lazily: fails the test if read more than ``slack`` past the
    limit."""

    def __init__(self, slack: int) -> None:
        super().__init__(op(f"o-{n}") for n in range(LIMITS.max_operations + slack + 5))
        self.slack = slack

    def __iter__(self) -> Iterator[Any]:
        for n, item in enumerate(super().__iter__()):
            if n >= LIMITS.max_operations + self.slack:
                raise AssertionError("parse_operations read far past the limit before refusing")
            yield item


def test_each_item_is_let_go_once_its_operation_is_made() -> None:
    items: list[Any] = [op("a"), op("b")]
    documents = [item["data"] for item in items]
    operations = parse_operations(items, LIMITS, serialize)
    assert items == [None, None]
    assert [operation.data for operation in operations] == documents


def test_one_over_the_maximum_raises_too_many_operations_without_reading_further() -> None:
    with pytest.raises(TooManyOperations) as raised:
        parse_operations(_ValidThenExplode(slack=1), LIMITS, serialize)
    assert raised.value.code == "too_many_operations"


def test_too_many_operations_wins_over_invalid_ones() -> None:
    items = [op(f"o-{n}", op="nope") for n in range(LIMITS.max_operations + 1)]
    with pytest.raises(TooManyOperations):
        parse_operations(items, LIMITS, serialize)


# --- keys first: what admission needs before the documents are checked --------------


def test_parse_keys_gives_each_items_key_in_order() -> None:
    items = [op("o-1"), {"op": "delete", "type": "customer", "id": "o-1"}, op("o-2")]
    assert parse_keys(items, LIMITS.max_operations) == [
        ResourceKey("order", "o-1"),
        ResourceKey("customer", "o-1"),
        ResourceKey("order", "o-2"),
    ]


@pytest.mark.parametrize(
    "items",
    [
        [],  # no operation
        [op("o-1"), op("o-1")],  # a key twice
        [op("o-1"), "not an object"],
        [op("o-1"), op("..")],  # an id no URL can name
        [op("o-1"), op("o-2", type="Order")],  # a type that is not one
        [op("o-1"), {k: v for k, v in op("o-2").items() if k != "id"}],
        [op(f"o-{n}") for n in range(LIMITS.max_operations + 1)],  # over the limit
    ],
)
def test_parse_keys_leaves_every_problem_with_a_key_to_the_full_check(items: list[Any]) -> None:
    assert parse_keys(items, LIMITS.max_operations) is None


def _outcome(items: list[Any], keys: list[ResourceKey] | None) -> object:
    """The operations, or the refusal's type, code and errors."""
    try:
        return parse_operations(list(items), LIMITS, serialize, keys)
    except (ValidationFailed, TooManyOperations) as error:
        return type(error), error.code, getattr(error, "errors", None)


#: What may be wrong with an item besides its key (None: nothing, the common case).
_FLAWS: dict[str | None, dict[str, Any]] = {
    None: {},
    "unknown op": {"op": "merge"},
    "data a list": {"data": []},
    "data a string": {"data": "x"},
    "data too deep": {"data": nested(5)},
    "if_version below 0": {"if_version": -1},
    "if_version a bool": {"if_version": True},
    "if_version a string": {"if_version": "1"},
    "unknown field": {"colour": "red"},
}


def _item(kind: str, rtype: str, rid: str, if_version: int | None, flaw: str | None) -> Any:
    item: dict[str, Any] = {"op": kind, "type": rtype, "id": rid}
    if kind != "delete":
        item["data"] = {"total": 1}
    if if_version is not None:
        item["if_version"] = if_version
    return item | _FLAWS[flaw]


_ITEMS = st.lists(
    st.builds(
        _item,
        st.sampled_from(["upsert", "patch", "delete"]),
        st.sampled_from(["order", "customer"]),
        st.sampled_from([f"o-{n}" for n in range(12)]),
        st.sampled_from([None, 0, 7]),
        # About one item in four has a flaw, so some requests pass whole and some do not.
        st.sampled_from([None] * 24 + list(_FLAWS)),
    ),
    min_size=1,
    max_size=LIMITS.max_operations,
    # Valid keys, each once: the keys' pass passes (its refusals are the cases above),
    # and the rest of each item decides.
    unique_by=lambda item: (item["type"], item["id"]),
)


@settings(max_examples=300, deadline=None)
@given(_ITEMS)
def test_checking_with_the_keys_found_first_decides_as_checking_whole(items: list[Any]) -> None:
    """Every item whose keys pass is judged the same with them as without: the same
    operations, or the same refusal naming the same problems."""
    keys = parse_keys(list(items), LIMITS.max_operations)
    assert keys is not None
    assert _outcome(items, keys) == _outcome(items, None)
