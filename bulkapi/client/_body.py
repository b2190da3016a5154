"""A submit's body: produced lazily, sent again byte for byte on a retry."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

#: Bytes of a submit body kept in memory before the copy kept for a retry moves to disk.
SPOOL_IN_MEMORY = 1024 * 1024
#: Bytes sent per chunk of a streamed submit body.
CHUNK_BYTES = 64 * 1024


class ReplayableBody:
    """A request body produced lazily and sent again, byte for byte, on a retry.

    The bytes go out as they are produced and are also kept in a spooled temporary file
    (in memory up to ``SPOOL_IN_MEMORY``, then on disk), so a generator of operations is
    read once and never held in memory whole. A retry first sends what the file holds,
    then goes on with the generator where the previous try left it.
    """

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._copy: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        self._size = 0

    def chunks(self) -> Iterator[bytes]:
        """The whole body from its start, in chunks of about ``CHUNK_BYTES``."""
        sent = 0
        while sent < self._size:
            self._copy.seek(sent)
            chunk = self._copy.read(min(CHUNK_BYTES, self._size - sent))
            sent += len(chunk)
            yield chunk
        # A try can only be given up where this generator yields: by then the chunk is kept.
        pending: list[bytes] = []
        pending_size = 0
        for piece in self._pieces:
            pending.append(piece)
            pending_size += len(piece)
            if pending_size >= CHUNK_BYTES:
                yield self._keep(b"".join(pending))
                pending, pending_size = [], 0
        if pending:
            yield self._keep(b"".join(pending))

    def _keep(self, chunk: bytes) -> bytes:
        self._copy.seek(self._size)
        self._copy.write(chunk)
        self._size += len(chunk)
        return chunk

    def close(self) -> None:
        self._copy.close()
