"""Reading request bodies: media types, size limits and JSON / NDJSON parsing."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from flask import request
from werkzeug.exceptions import (
    ClientDisconnected,
    RequestTimeout,
    UnsupportedMediaType,
)

from bulkapi.api.context import runtime
from bulkapi.core.errors import MalformedBody, TooManyOperations, ValidationFailed
from bulkapi.core.validation import Envelope, check_envelope

JSON_TYPES = frozenset({"application/json", "application/merge-patch+json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})


#: Socket time limit set once a body is overdue: the next read fails almost at once.
_CUT_OFF_SECONDS = 0.05


def _cut_off(sock: socket.socket) -> None:
    sock.settimeout(_CUT_OFF_SECONDS)


def _read(max_bytes: int) -> bytes:
    """The whole body, refused when too large (413), too slow (408) or short (400).

    The time limit covers the whole body, not each read: a client trickling a byte at a
    time would satisfy any per-read timeout. Under gunicorn a timer shortens the client
    socket's timeout when the limit passes, so the read in progress fails.
    """
    request.max_content_length = max_bytes  # larger bodies end in 413 as they are read
    sock = request.environ.get("gunicorn.socket")
    limit = runtime().settings.body_timeout
    deadline = time.monotonic() + limit
    timer = None
    if isinstance(sock, socket.socket):
        timer = threading.Timer(limit, _cut_off, args=(sock,))
        timer.daemon = True
        timer.start()
    try:
        raw = request.get_data(cache=False)
    except (OSError, ClientDisconnected):
        if time.monotonic() < deadline:
            raise  # the client went away or an I/O error: not ours to call a timeout
        raise RequestTimeout("The body did not arrive in time.") from None
    finally:
        if timer is not None:
            timer.cancel()
    if isinstance(sock, socket.socket):
        sock.settimeout(None)  # the body is in: answer without a limit, as gunicorn expects
    expected = request.content_length
    if expected is not None and len(raw) != expected:
        # gunicorn marks its input terminated, so Werkzeug does not check the length.
        raise MalformedBody(f"The body ended after {len(raw)} of {expected} bytes.")
    return raw


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedBody(f"The body is not valid JSON: {error}.") from None


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
    if errors:
        raise ValidationFailed(f"{len(errors)} line(s) are not valid JSON.", errors)
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
