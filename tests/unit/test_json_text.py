"""The outline of a bulk body, read without decoding it, agrees with a JSON parser."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkapi.core.json_text import MAX_DEPTH, NotJson, integer_out_of_range, outline

UNLIMITED = 10**9

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)
envelopes = st.dictionaries(
    st.sampled_from(["operations", "metadata", "callback_url", "x"]), values, max_size=4
)


def _text(value: Any, indent: bool, ascii_only: bool) -> bytes:
    return json.dumps(value, indent=2 if indent else None, ensure_ascii=ascii_only).encode()


@settings(max_examples=500, deadline=None)
@given(envelopes, st.booleans(), st.booleans())
def test_outline_finds_every_member_and_counts_the_operations(
    body: dict[str, Any], indent: bool, ascii_only: bool
) -> None:
    text = _text(body, indent, ascii_only)
    found = outline(text, UNLIMITED, UNLIMITED)
    assert found.is_object
    assert [name for name, _, _ in found.members] == list(body)
    for name, start, end in found.members:
        assert json.loads(text[start:end]) == body[name]
    operations = body.get("operations")
    assert found.operations == (len(operations) if isinstance(operations, list) else 0)


@settings(max_examples=300, deadline=None)
@given(values)
def test_outline_tells_an_object_from_any_other_value(value: Any) -> None:
    assert outline(_text(value, False, True), UNLIMITED, UNLIMITED).is_object is isinstance(
        value, dict
    )


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=40) | st.text(alphabet='{}[],:"\\ 1an', max_size=30).map(str.encode))
def test_outline_never_refuses_what_the_parser_takes(text: bytes) -> None:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return
    outline(text, UNLIMITED, UNLIMITED)


def test_counting_stops_one_past_the_limit() -> None:
    text = b'{"operations": [' + b"{}," * 1_000_000 + b'{}], "extra": }'
    found = outline(text, 10, UNLIMITED)
    assert found.operations == 11


def test_an_escaped_member_name_counts_as_what_it_decodes_to() -> None:
    found = outline(b'{"operation\\u0073": [1, 2, 3]}', 2, UNLIMITED)
    assert found.operations == 3


def test_operations_longer_than_the_limit_are_named_by_index() -> None:
    text = orjson.dumps({"operations": [{"a": 1}, {"a": "x" * 100}, 3, "y" * 100]})
    assert [index for index, _ in outline(text, UNLIMITED, 50).long_operations] == [1, 3]


@pytest.mark.parametrize("depth", [17, 40, MAX_DEPTH - 1])
def test_values_nested_deeper_than_one_match_are_walked(depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    text = b'{"m": ' + nested + b', "operations": [1, ' + nested + b', {"a": ' + nested + b"}]}"
    found = outline(text, UNLIMITED, UNLIMITED)
    assert [name for name, _, _ in found.members] == ["m", "operations"]
    assert found.operations == 3


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"{",
        b'{"operations": [}',
        b'{"operations": [1 2]}',
        b'{"a" 1}',
        b'{"a": 1} {}',
        b'{"a": "unterminated}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_broken_structure_is_not_json(text: bytes) -> None:
    with pytest.raises(NotJson):
        outline(text, UNLIMITED, UNLIMITED)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (b'{"n": 18446744073709551615}', None),
        (b'{"n": 18446744073709551616}', "18446744073709551616"),
        (b'{"n": -9223372036854775809}', "-9223372036854775809"),
        (b'{"s": "12345678901234567890123"}', None),
    ],
)
def test_integers_outside_64_bits_are_found(text: bytes, found: str | None) -> None:
    assert integer_out_of_range(text) == found


def test_a_long_run_of_digits_across_windows_is_found() -> None:
    text = b'{"pad": "' + b" " * (1024 * 1024 - 20) + b'", "n": 99999999999999999999999}'
    assert integer_out_of_range(text) == "99999999999999999999999"
