"""Opaque keyset cursors: clients pass them back verbatim, never parse them."""

from __future__ import annotations

import base64
import binascii

import orjson

from bulkapi.core.errors import ValidationFailed


def encode_cursor(position: str | int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": position})).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type[str] | type[int]) -> str | int | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = orjson.loads(base64.urlsafe_b64decode(padded.encode()))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
        position = None
    if not isinstance(position, kind) or isinstance(position, bool):
        raise ValidationFailed(
            "The cursor is not one this API handed out.", {"cursor": ["Invalid cursor."]}
        )
    return position
