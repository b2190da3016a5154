"""Reading request bodies: media types, size limits and JSON / NDJSON parsing.

Memory stays near the body's own size whatever its shape: NDJSON is split into lines as
it arrives and the lines are decoded only once the body is complete and within the
operation limit, and a large JSON bulk body is outlined (``bulkapi.core.json_text``)
before it is decoded, so one over the limit is refused without building an object for
every item.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from flask import request
from werkzeug.exceptions import UnsupportedMediaType

from bulkapi.api.body_stream import body_chunks, read_body
from bulkapi.api.collector import LARGE, collector_paused
from bulkapi.config import Settings
from bulkapi.core.errors import MalformedBody, TooManyOperations, ValidationFailed
from bulkapi.core.json_text import (
    NotJson,
    has_long_digit_run,
    integer_out_of_range,
    outline,
)
from bulkapi.core.validation import Envelope, check_document, check_envelope

JSON_TYPES = frozenset({"application/json", "application/merge-patch+json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
#: Bytes an NDJSON line may carry beyond its document (the operation's other fields).
LINE_SLACK = 4096
#: A JSON body up to this size is decoded without an outline first: whatever it holds,
#: its objects take a few tens of megabytes at most, and its outline would cost more
#: than its decoding saves.
_DECODE_UNSEEN = 1024 * 1024
#: Bytes of NDJSON split into lines at a time: a megabyte of two-byte lines would
#: otherwise be split into hundreds of thousands of objects at once.
_SPLIT_WINDOW = 64 * 1024
#: A running SHA-256 (``hashlib``'s object).
Hash = Any


def _parse(raw: bytes | bytearray) -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedBody(f"The body is not valid JSON: {error}.") from None
    if (number := integer_out_of_range(raw)) is not None:
        raise MalformedBody(f"The body holds an integer outside the 64-bit range: {number}.")
    return value


def read_document(max_bytes: int) -> dict[str, Any]:
    """A resource document: a JSON object, at most ``max_bytes`` on the wire."""
    if request.mimetype not in JSON_TYPES:
        raise UnsupportedMediaType("Send the document as application/json.")
    document = _parse(read_body(max_bytes))
    if not isinstance(document, dict):
        raise ValidationFailed(
            "The document must be a JSON object.", {"_schema": ["Must be a JSON object."]}
        )
    return document


class _NdjsonLines:
    """The lines of an NDJSON body, split as chunks arrive and decoded at the end.

    Lines are kept as bytes until the body is complete: a body over the operation limit
    is refused one line past it, before any line is decoded. Blank lines are skipped; a
    line longer than ``max_line`` is refused at its index without being kept (its bytes
    are dropped as they arrive).
    """

    def __init__(self, max_operations: int, max_line: int) -> None:
        self.max_operations = max_operations
        self.max_line = max_line
        #: Each operation's line, or None for a line refused already.
        self._lines: list[bytes | None] = []
        self._errors: dict[str, dict[str, list[str]]] = {}
        #: Indexes of lines holding a long run of digits (an integer may be out of range).
        self._long_digits: set[int] = set()
        #: The start of a line whose end has not arrived yet.
        self._partial: list[bytes] = []
        self._partial_size = 0
        #: The partial line passed ``max_line``; its bytes were dropped.
        self._too_long = False
        #: ... and some of those bytes were not white space.
        self._too_long_used = False

    def feed(self, chunk: bytes) -> None:
        for start in range(0, len(chunk), _SPLIT_WINDOW):
            self._feed(chunk[start : start + _SPLIT_WINDOW])

    def _feed(self, chunk: bytes) -> None:
        lines = chunk.split(b"\n")
        if len(lines) == 1:
            self._extend(chunk)
            return
        self._extend(lines[0])
        self._end_partial()
        long_digits = has_long_digit_run(chunk)
        for line in lines[1:-1]:
            self._line(line, long_digits)
        self._extend(lines[-1])

    def finish(self) -> list[Any]:
        """Every line decoded, or ValidationFailed with every line that could not be."""
        self._end_partial()
        lines, self._lines = self._lines, []
        items: list[Any] = []
        with collector_paused(len(lines)):
            for index, line in enumerate(lines):
                items.append(self._decode(index, line))
                lines[index] = None  # each line's bytes go as its objects come
        if self._errors:
            raise ValidationFailed(f"{len(self._errors)} line(s) could not be read.", self._errors)
        return items

    def _decode(self, index: int, line: bytes | None) -> Any:
        if line is None:
            return None
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            self._errors[str(index)] = {"_schema": ["Not a valid JSON line."]}
            return None
        if index in self._long_digits and integer_out_of_range(line) is not None:
            self._errors[str(index)] = {"_schema": ["Holds an integer outside the 64-bit range."]}
        return item

    def _extend(self, piece: bytes) -> None:
        if self._too_long:
            self._too_long_used = self._too_long_used or bool(piece.strip())
            return
        self._partial.append(piece)
        self._partial_size += len(piece)
        if self._partial_size > self.max_line:
            self._too_long = True
            self._too_long_used = any(part.strip() for part in self._partial)
            self._partial, self._partial_size = [], 0

    def _end_partial(self) -> None:
        if self._too_long:
            if self._too_long_used:
                self._refuse_long(self._next_index())
            self._too_long = self._too_long_used = False
            return
        line = b"".join(self._partial)
        self._partial, self._partial_size = [], 0
        self._line(line, has_long_digit_run(line))

    def _next_index(self) -> int:
        index = len(self._lines)
        if index >= self.max_operations:
            raise TooManyOperations(
                f"A bulk request takes at most {self.max_operations} operations."
            )
        return index

    def _refuse_long(self, index: int) -> None:
        self._errors[str(index)] = {"_schema": [f"Line longer than {self.max_line} bytes."]}
        self._lines.append(None)

    def _line(self, line: bytes, long_digits: bool) -> None:
        if not line.strip():
            return
        index = self._next_index()
        if len(line) > self.max_line:  # refused before parsing: no huge line is decoded
            self._refuse_long(index)
            return
        if long_digits:
            self._long_digits.add(index)
        self._lines.append(line)


@dataclass(frozen=True, slots=True)
class BulkBody:
    items: list[Any]
    envelope: Envelope
    #: SHA-256 of the body as decoded (inflated), when asked for: for Idempotency-Key.
    digest: Hash | None = None


def read_bulk(settings: Settings, digest: bool) -> BulkBody:
    """The raw operations of a bulk request and its other fields.

    With ``digest``, the body's SHA-256 comes along (of the body as decoded, so the same
    operations compressed or not are the same request).
    """
    hasher = hashlib.sha256() if digest else None
    max_operations = settings.max_operations
    max_line = settings.max_document_bytes + LINE_SLACK
    if request.mimetype in NDJSON_TYPES:
        lines = _NdjsonLines(max_operations, max_line)
        for chunk in body_chunks(settings.max_body_bytes):
            if hasher is not None:
                hasher.update(chunk)
            lines.feed(chunk)
        envelope = Envelope(request.args.get("callback_url"), None, request.args.get("deadline"))
        return BulkBody(lines.finish(), envelope, hasher)
    if request.mimetype not in JSON_TYPES:
        raise UnsupportedMediaType("Send application/json or application/x-ndjson.")
    raw = read_body(settings.max_body_bytes)
    if hasher is not None:
        hasher.update(raw)
    if len(raw) > _DECODE_UNSEEN or raw.count(b",") >= max_operations:
        _check_outline(raw, settings, max_line)
    with collector_paused(LARGE if len(raw) > _DECODE_UNSEEN else 0):
        body = _parse(raw)
    operations, envelope = check_envelope(body)
    if len(operations) > max_operations:
        raise TooManyOperations(f"A bulk request takes at most {max_operations} operations.")
    return BulkBody(operations, envelope, hasher)


def _check_outline(raw: bytearray, settings: Settings, max_line: int) -> None:
    """Refuse, before decoding it whole, a JSON body that would be costly to decode and
    is bound to be refused: one over the operation limit, or holding an operation or a
    member too long to be valid.

    A value longer than a document may be as sent is refused unread; an operation or the
    metadata longer than an NDJSON line may be is decoded alone and its document
    checked, one at a time, so a body of large invalid documents never stands decoded
    at once.
    """
    max_operations = settings.max_operations
    max_wire = settings.max_document_wire_bytes + LINE_SLACK
    try:
        found = outline(raw, max_operations, max_line)
    except NotJson as error:
        raise MalformedBody(f"The body is not valid JSON: {error}") from None
    if not found.is_object:
        check_envelope(None)  # raises: the body must be an object
    if found.operations > max_operations:
        raise TooManyOperations(f"A bulk request takes at most {max_operations} operations.")
    errors: dict[str, Any] = {}
    for index, (start, end) in found.long_operations:
        if end - start > max_wire:
            errors[str(index)] = {"_schema": [f"Longer than {max_wire} bytes as sent."]}
        elif problems := _document_problems(raw, start, end, "data", settings):
            errors[str(index)] = {"data": problems}
    for name, start, end in found.members:
        if name == "operations" or end - start <= max_line:
            continue
        if end - start > max_wire:
            errors[name] = [f"Longer than {max_wire} bytes as sent."]
        elif name == "metadata" and (
            problems := _document_problems(raw, start, end, None, settings)
        ):
            errors[name] = problems
    if errors:
        raise ValidationFailed("The bulk request is invalid.", errors)


def _document_problems(
    raw: bytearray, start: int, end: int, field: str | None, settings: Settings
) -> list[str]:
    """Problems with the document at ``raw[start:end]`` (or in its ``field``), decoded
    alone; none when it is not where a document is expected (validation says so later)."""
    value = _parse(raw[start:end])
    if field is not None:
        if not isinstance(value, dict) or field not in value:
            return []
        value = value[field]
    if not isinstance(value, dict):
        return []
    return check_document(value, settings.admission_limits, orjson.dumps)
