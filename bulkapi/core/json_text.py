"""JSON text looked at without decoding it: the outline of a bulk body, and integers
that a fast parser would read inexactly.

Decoding a body builds a Python object for every value in it, tens of times the size
of a value as small as ``{}``; the outline is what the admission needs to know first
(how many operations there are, how long each is as sent), found with regular
expressions that run in C and allocate nothing per value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

#: orjson reads integers in this range exactly, and larger ones silently as floats.
INT_RANGE = range(-(2**63), 2**64)
#: Every ASCII digit to "0", every other byte to a space: a long run of digits is then
#: a plain substring search away.
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
#: Only a number written with this many digits in a row can fall outside ``INT_RANGE``.
_LONG_DIGIT_RUN = b"0" * 19
#: Bytes translated at a time when looking for a long run of digits (bounds the copy).
_DIGIT_WINDOW = 1024 * 1024
#: Characters of a refused integer quoted in an error.
_QUOTED_DIGITS = 40

#: Deepest nesting the scanner follows (as the parser does: deeper is not read at all).
MAX_DEPTH = 1024
#: Levels of nesting one regular expression match skips at once; deeper values are
#: walked a bracket at a time down to this depth, then skipped again in one match.
_LEVELS = 16

_STRING = rb'"(?:[^"\\]++|\\.)*+"'
#: Anything between the brackets and strings of a container: commas, colons, scalars.
_FILLER = rb'[^"\[\]{}]++'
#: A scalar: a number, true, false or null (checked by the parser later).
_SCALAR = rb'[^\s,:"\[\]{}]++'


def _container(levels: int) -> bytes:
    """A bracketed value nesting at most ``levels`` + 1 deep (brackets matched by depth,
    not by kind: a mismatched pair is the parser's to refuse)."""
    pattern = rb"[\[{](?:" + _FILLER + b"|" + _STRING + rb")*+[\]}]"
    for _ in range(levels):
        pattern = rb"[\[{](?:" + _FILLER + b"|" + _STRING + b"|" + pattern + rb")*+[\]}]"
    return pattern


_CONTAINER = _container(_LEVELS)
_VALUE = re.compile(_STRING + b"|" + _CONTAINER + b"|" + _SCALAR, re.DOTALL)
_STRING_AT = re.compile(_STRING, re.DOTALL)
_CONTAINER_AT = re.compile(_CONTAINER, re.DOTALL)
_STRUCTURAL = re.compile(rb'["\[\]{}]')
_SPACE = re.compile(rb"\s*+")


def _after_space(text: bytes | bytearray, position: int) -> int:
    match = _SPACE.match(text, position)
    return position if match is None else match.end()


class NotJson(ValueError):
    """The text is not JSON: the parser would refuse it too."""


@dataclass(slots=True)
class Outline:
    """What a bulk body holds, as sent: its members' extents and its operations'."""

    #: Whether the body is a JSON object (otherwise nothing else is filled in).
    is_object: bool = True
    #: Every member's name (decoded) and the extent of its value, in order.
    members: list[tuple[str, int, int]] = field(default_factory=list)
    #: Items of the ``operations`` array, counted up to one past the limit asked for.
    operations: int = 0
    #: Index and extent of each operation longer than the limit asked for, as sent.
    long_operations: list[tuple[int, tuple[int, int]]] = field(default_factory=list)


def outline(text: bytes | bytearray, max_operations: int, max_item: int) -> Outline:
    """The outline of a bulk body; counting of operations stops past ``max_operations``.

    Raises ``NotJson`` where the structure is broken. Scalars are not checked (the
    parser does that), so a body may pass here and still be refused as malformed.
    """
    position = _after_space(text, 0)
    if text[position : position + 1] != b"{":
        end = _skip_value(text, position)
        if _after_space(text, end) != len(text):
            raise NotJson(f"Text after the value at byte {end}.")
        return Outline(is_object=False)
    found = Outline()
    position = _after_space(text, position + 1)
    if text[position : position + 1] == b"}":
        return _ends(text, position + 1, found)
    while True:
        name_match = _STRING_AT.match(text, position)
        if name_match is None:
            raise NotJson(f"Expected a member name at byte {position}.")
        name = _name(name_match.group())
        position = _after_space(text, name_match.end())
        if text[position : position + 1] != b":":
            raise NotJson(f"Expected ':' at byte {position}.")
        start = _after_space(text, position + 1)
        if name == "operations" and text[start : start + 1] == b"[":
            end = _count_items(text, start, max_operations, max_item, found)
            if found.operations > max_operations:
                return found
        else:
            end = _skip_value(text, start)
        found.members.append((name, start, end))
        position = _after_space(text, end)
        separator = text[position : position + 1]
        if separator == b"}":
            return _ends(text, position + 1, found)
        if separator != b",":
            raise NotJson(f"Expected ',' or '}}' at byte {position}.")
        position = _after_space(text, position + 1)


def _ends(text: bytes | bytearray, position: int, found: Outline) -> Outline:
    if _after_space(text, position) != len(text):
        raise NotJson(f"Text after the body's object at byte {position}.")
    return found


def _name(raw: bytes) -> str:
    if b"\\" not in raw:
        return raw[1:-1].decode("utf-8", "replace")
    try:  # an escaped name ("operation\u0073") means what it decodes to
        return str(json.loads(raw))
    except ValueError:
        raise NotJson("A member name is not a valid string.") from None


def _count_items(
    text: bytes | bytearray, start: int, limit: int, max_item: int, found: Outline
) -> int:
    """Count the items of the array at ``start`` (stopping past ``limit``); its end."""
    position = _after_space(text, start + 1)
    if text[position : position + 1] == b"]":
        return position + 1
    while True:
        end = _skip_value(text, position)
        if end - position > max_item:
            found.long_operations.append((found.operations, (position, end)))
        found.operations += 1
        if found.operations > limit:
            return end
        position = _after_space(text, end)
        separator = text[position : position + 1]
        if separator == b"]":
            return position + 1
        if separator != b",":
            raise NotJson(f"Expected ',' or ']' at byte {position}.")
        position = _after_space(text, position + 1)


def _skip_value(text: bytes | bytearray, position: int) -> int:
    """The end of the value that starts at ``position`` (no leading space)."""
    match = _VALUE.match(text, position)
    if match is None:
        if text[position : position + 1] not in (b"[", b"{"):
            raise NotJson(f"Expected a value at byte {position}.")
        return _walk(text, position)
    return match.end()


def _walk(text: bytes | bytearray, position: int) -> int:
    """The end of a container nested deeper than one match follows: its outer levels a
    bracket at a time, each inner value in one match where it can."""
    depth = 0
    while True:
        special = _STRUCTURAL.search(text, position)
        if special is None:
            raise NotJson("The body ends inside a value.")
        position = special.start()
        char = text[position]
        if char == 0x22:  # '"'
            string = _STRING_AT.match(text, position)
            if string is None:
                raise NotJson(f"Unterminated string at byte {position}.")
            position = string.end()
        elif char in b"[{":
            inner = _CONTAINER_AT.match(text, position) if depth else None
            if inner is not None:
                position = inner.end()
                continue
            depth += 1
            if depth > MAX_DEPTH:
                raise NotJson(f"Nested deeper than {MAX_DEPTH} levels.")
            position += 1
        else:
            depth -= 1
            position += 1
            if depth == 0:
                return position


def has_long_digit_run(text: bytes | bytearray) -> bool:
    """Whether ``text`` holds 19 or more digits in a row (a copy of a window at a time)."""
    step = _DIGIT_WINDOW
    overlap = len(_LONG_DIGIT_RUN) - 1
    return any(
        _LONG_DIGIT_RUN in text[start : start + step + overlap].translate(_DIGITS)
        for start in range(0, max(len(text), 1), step)
    )


class _OutOfRange(ValueError):
    pass


def _checked_int(text: str) -> int:
    # No int() of thousands of digits: Python refuses them, and they are out of range.
    value = int(text) if len(text) <= 21 else None
    if value is None or value not in INT_RANGE:
        raise _OutOfRange(text)
    return value


def integer_out_of_range(text: bytes | bytearray) -> str | None:
    """An integer of the JSON ``text`` that orjson would have read as a float.

    The digit scan costs a fraction of the parse; only a text with a long run of digits
    (in a number or in a string) is parsed again, by Python's json with a hook that sees
    every integer as written.
    """
    if not has_long_digit_run(text):
        return None
    try:
        json.loads(text, parse_int=_checked_int)
    except _OutOfRange as error:
        number = str(error)
        return number if len(number) <= _QUOTED_DIGITS else number[:_QUOTED_DIGITS] + "..."
    except (ValueError, RecursionError):
        pass  # past Python's recursion limit, so deeper than a document may be: refused later
    return None
