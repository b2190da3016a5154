"""Reading request bodies: media types, size limits and JSON / NDJSON parsing."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import IO, Any

import orjson
from flask import request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected, RequestTimeout, UnsupportedMediaType
from werkzeug.wsgi import get_input_stream

from bulkapi.api.context import runtime
from bulkapi.api.deadlines import cut_off_reads
from bulkapi.core.errors import MalformedBody, PayloadTooLarge, TooManyOperations, ValidationFailed
from bulkapi.core.validation import Envelope, check_envelope

JSON_TYPES = frozenset({"application/json", "application/merge-patch+json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})

#: Bytes asked for at a time from a body of unknown length (chunked).
_READ_STEP = 1024 * 1024


def _read(max_bytes: int) -> bytes:
    """The whole body, refused when too large (413), too slow (408) or short (400).

    The body is read up to one byte past ``max_bytes``, whether or not it declares its
    length: a chunked body has none, and must not be cut silently at the limit. The
    time limit covers the whole body, not each read (a client trickling a byte at a
    time would satisfy any per-read timeout): under gunicorn an alarm shuts down the
    socket's read side at the deadline, which also ends a read already blocked.
    """
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise PayloadTooLarge(f"The body is {declared} bytes; at most {max_bytes} are taken.")
    limit = runtime().settings.body_timeout
    sock = request.environ.get("gunicorn.socket")
    alarm = cut_off_reads(sock, limit) if isinstance(sock, socket.socket) else None
    raw: bytes | None = None
    try:
        raw = _read_at_most(get_input_stream(request.environ), max_bytes, declared)
    except (OSError, ClientDisconnected, ParseException):
        pass  # the client went away, stalled, or broke the chunked framing: see below
    finally:
        in_time = alarm is None or alarm.cancel()
    if not in_time:
        raise RequestTimeout(f"The body did not arrive within {limit:g} seconds.")
    if raw is None:
        raise MalformedBody("The body could not be read: it ended early or its framing is broken.")
    if declared is not None and len(raw) != declared:
        raise MalformedBody(f"The body ended after {len(raw)} of {declared} bytes.")
    return raw


def _read_at_most(stream: IO[bytes], max_bytes: int, declared: int | None) -> bytes:
    """Everything ``stream`` holds; PayloadTooLarge as soon as that passes ``max_bytes``."""
    # A declared length is read in one call (and one more that finds the end).
    step = _READ_STEP if declared is None else declared + 1
    chunks: list[bytes] = []
    size = 0
    while chunk := stream.read(min(step, max_bytes + 1 - size)):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"The body is larger than {max_bytes} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


#: orjson reads integers in this range exactly, and larger ones silently as floats.
_INT_RANGE = range(-(2**63), 2**64)
#: Every ASCII digit to "0", every other byte to a space: a long run of digits in a
#: body is then a plain substring search away.
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
#: Only a number written with this many digits in a row can fall outside ``_INT_RANGE``.
_LONG_DIGIT_RUN = b"0" * 19
#: Characters of a refused integer quoted in the error.
_QUOTED_DIGITS = 40


class _OutOfRange(ValueError):
    pass


def _checked_int(text: str) -> int:
    # No int() of thousands of digits: Python refuses them, and they are out of range.
    value = int(text) if len(text) <= 21 else None
    if value is None or value not in _INT_RANGE:
        raise _OutOfRange(text)
    return value


def _has_long_digit_run(raw: bytes) -> bool:
    return _LONG_DIGIT_RUN in raw.translate(_DIGITS)


def _integer_out_of_range(raw: bytes) -> str | None:
    """An integer of the JSON text ``raw`` that orjson would have read as a float.

    The digit scan costs a fraction of the parse; only a body with a long run of digits
    (in a number or in a string) is parsed again, by Python's json with a hook that sees
    every integer as written.
    """
    if not _has_long_digit_run(raw):
        return None
    try:
        json.loads(raw, parse_int=_checked_int)
    except _OutOfRange as error:
        text = str(error)
        return text if len(text) <= _QUOTED_DIGITS else text[:_QUOTED_DIGITS] + "..."
    except (ValueError, RecursionError):
        pass  # past Python's recursion limit, so deeper than a document may be: refused later
    return None


def _parse(raw: bytes) -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedBody(f"The body is not valid JSON: {error}.") from None
    if (number := _integer_out_of_range(raw)) is not None:
        raise MalformedBody(f"The body holds an integer outside the 64-bit range: {number}.")
    return value


def read_document(max_bytes: int) -> dict[str, Any]:
    """A resource document: a JSON object, at most ``max_bytes`` on the wire."""
    if request.mimetype not in JSON_TYPES:
        raise UnsupportedMediaType("Send the document as application/json.")
    document = _parse(_read(max_bytes))
    if not isinstance(document, dict):
        raise ValidationFailed(
            "The document must be a JSON object.", {"_schema": ["Must be a JSON object."]}
        )
    return document


def _parse_ndjson(raw: bytes, max_line: int) -> list[Any]:
    errors: dict[str, dict[str, list[str]]] = {}
    items: list[Any] = []
    # One scan of the whole body; only if it finds a long run of digits is each line checked.
    check_integers = _has_long_digit_run(raw)
    for index, line in enumerate(line for line in raw.split(b"\n") if line.strip()):
        if len(line) > max_line:  # refused before parsing: no huge line is decoded
            errors[str(index)] = {"_schema": [f"Line longer than {max_line} bytes."]}
            items.append(None)
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            errors[str(index)] = {"_schema": ["Not a valid JSON line."]}
            items.append(None)
            continue
        if check_integers and _integer_out_of_range(line) is not None:
            errors[str(index)] = {"_schema": ["Holds an integer outside the 64-bit range."]}
    if errors:
        raise ValidationFailed(f"{len(errors)} line(s) could not be read.", errors)
    return items


@dataclass(frozen=True, slots=True)
class BulkBody:
    items: list[Any]
    envelope: Envelope
    #: The body as sent, for Idempotency-Key comparisons.
    raw: bytes


def read_bulk(max_bytes: int, max_operations: int, max_line: int) -> BulkBody:
    """The raw operations of a bulk request and its other fields (NDJSON lines of at
    most ``max_line`` bytes)."""
    if request.mimetype in NDJSON_TYPES:
        raw = _read(max_bytes)
        if (
            raw.count(b"\n") > max_operations
            and sum(1 for line in raw.split(b"\n") if line.strip()) > max_operations
        ):
            raise TooManyOperations(f"A bulk request takes at most {max_operations} operations.")
        envelope = Envelope(request.args.get("callback_url"), None, request.args.get("deadline"))
        return BulkBody(_parse_ndjson(raw, max_line), envelope, raw)
    if request.mimetype not in JSON_TYPES:
        raise UnsupportedMediaType("Send application/json or application/x-ndjson.")
    raw = _read(max_bytes)
    operations, envelope = check_envelope(_parse(raw))
    if len(operations) > max_operations:
        raise TooManyOperations(f"A bulk request takes at most {max_operations} operations.")
    return BulkBody(operations, envelope, raw)
