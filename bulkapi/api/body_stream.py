"""A request body as a stream of chunks: size limit, time limit and content coding.

The body is never held twice: a chunk at a time is read from the socket, inflated when
the client compressed it, counted against the limit, and handed on. The limit applies
to the body as sent and to what it inflates to, and is enforced while inflating, so a
small compressed body that would inflate to gigabytes costs at most the limit.
"""

from __future__ import annotations

import socket
import zlib
from collections.abc import Iterator
from typing import IO

from flask import request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected, RequestTimeout
from werkzeug.wsgi import get_input_stream

from bulkapi.api.context import runtime
from bulkapi.api.deadlines import cut_off_reads
from bulkapi.core.errors import MalformedBody, PayloadTooLarge, UnsupportedContentEncoding

#: Bytes read (and inflated) at a time.
CHUNK = 1024 * 1024
#: Content codings taken: gzip, under either name (RFC 9110 8.4.1.3), and none.
_GZIP = frozenset({"gzip", "x-gzip"})
_IDENTITY = "identity"
#: zlib's window bits for a gzip header and trailer.
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def content_coding() -> str | None:
    """``"gzip"`` or None (identity); any other coding is refused (415).

    One coding at most: a body compressed twice is no smaller, only more work to check.
    """
    header = request.headers.get("Content-Encoding", "")
    codings = [c.strip().lower() for c in header.split(",") if c.strip().lower() != _IDENTITY]
    codings = [c for c in codings if c]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _GZIP:
        return "gzip"
    raise UnsupportedContentEncoding(
        f"Content-Encoding {header.strip()!r} is not supported: send gzip or no coding."
    )


def body_chunks(max_bytes: int) -> Iterator[bytes]:
    """The body, inflated, in chunks of at most ``CHUNK`` bytes; refused when it is too
    large (413), too slow (408), short or broken (400).

    The time limit covers the whole body, not each read (a client trickling a byte at a
    time would satisfy any per-read timeout): under gunicorn an alarm shuts down the
    socket's read side at the deadline, which also ends a read already blocked. A body
    without a declared length (chunked) must not be cut silently at the limit: it is
    read up to one byte past it.
    """
    coding = content_coding()
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise PayloadTooLarge(f"The body is {declared} bytes; at most {max_bytes} are taken.")
    limit = runtime().settings.body_timeout
    sock = request.environ.get("gunicorn.socket")
    alarm = cut_off_reads(sock, limit) if isinstance(sock, socket.socket) else None
    wire = _wire_chunks(get_input_stream(request.environ), max_bytes, declared)
    try:
        yield from wire if coding is None else _inflated(wire, max_bytes)
    except _Broken:
        if alarm is None or alarm.cancel():
            raise MalformedBody(
                "The body could not be read: it ended early or its framing is broken."
            ) from None
    finally:
        in_time = alarm is None or alarm.cancel()
    if not in_time:
        raise RequestTimeout(f"The body did not arrive within {limit:g} seconds.")


def read_body(max_bytes: int) -> bytearray:
    """The whole body, inflated (see ``body_chunks``), in one buffer."""
    body = bytearray()
    for chunk in body_chunks(max_bytes):
        body += chunk
    return body


class _Broken(Exception):
    """The client went away, stalled, or broke the framing of its body."""


def _wire_chunks(stream: IO[bytes], max_bytes: int, declared: int | None) -> Iterator[bytes]:
    size = 0
    while True:
        try:
            chunk = stream.read(min(CHUNK, max_bytes + 1 - size))
        except (OSError, ClientDisconnected, ParseException):
            raise _Broken from None
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"The body is larger than {max_bytes} bytes.")
        yield chunk
    if declared is not None and size != declared:
        raise _Broken


def _inflated(wire: Iterator[bytes], max_bytes: int) -> Iterator[bytes]:
    """Inflate gzip members (one or more, back to back), at most ``CHUNK`` bytes a step,
    and refuse as soon as the total passes ``max_bytes``."""
    inflater = zlib.decompressobj(_GZIP_WBITS)
    size = 0
    try:
        for compressed in wire:
            pending = compressed
            while True:
                if inflater.eof:  # the next member of a multi-member stream
                    inflater = zlib.decompressobj(_GZIP_WBITS)
                chunk = inflater.decompress(pending, CHUNK)
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"The body inflates to more than {max_bytes} bytes.")
                if chunk:
                    yield chunk
                pending = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
                if not pending and (inflater.eof or len(chunk) < CHUNK):
                    break
    except zlib.error as error:
        raise MalformedBody(f"The body is not valid gzip: {error}.") from None
    if not inflater.eof:
        raise MalformedBody("The gzip body ends before its end marker.")
