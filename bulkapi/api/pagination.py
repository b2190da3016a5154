"""Opaque keyset cursors: clients pass them back verbatim, never parse them."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from bulkapi.core.errors import ValidationFailed

Row = TypeVar("Row")


def encode_cursor(position: str | int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": position})).decode().rstrip("=")


#: Cursors point at a row: an index (int4) or a key (at most 128 characters, no NUL).
MAX_INDEX = 2**31 - 1
_MAX_KEY = 128


def _plausible(position: object, kind: type[str] | type[int]) -> bool:
    if isinstance(position, bool) or not isinstance(position, kind):
        return False
    if isinstance(position, int):
        return 0 <= position <= MAX_INDEX
    assert isinstance(position, str)
    return len(position) <= _MAX_KEY and "\x00" not in position


def decode_cursor(cursor: str | None, kind: type[str] | type[int]) -> str | int | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = orjson.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        position = None
    if not _plausible(position, kind):
        raise ValidationFailed(
            "The cursor is not one this API handed out.", {"cursor": ["Invalid cursor."]}
        )
    assert isinstance(position, str | int)
    return position


def page_body(
    rows: Sequence[Row],
    limit: int,
    body_of: Callable[[Row], dict[str, Any]],
    position_of: Callable[[Row], str | int],
) -> dict[str, Any]:
    """``{items, next_cursor}`` from ``limit + 1`` rows: the extra row says more exist."""
    items = rows[:limit]
    more = len(rows) > limit
    return {
        "items": [body_of(row) for row in items],
        "next_cursor": encode_cursor(position_of(items[-1])) if more else None,
    }
