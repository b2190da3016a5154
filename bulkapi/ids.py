"""Identifiers and secrets: time-ordered ids and random tokens (the only source of randomness)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from datetime import UTC, datetime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _base32(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


class _MonotonicIds:
    """Within one process, ids sort in creation order even inside one millisecond: the
    random part then counts up from the previous id's (as monotonic ULIDs do)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = (0, 0)

    def next(self) -> tuple[int, int]:
        millis = time.time_ns() // 1_000_000
        with self._lock:
            last_millis, last_random = self._last
            if millis <= last_millis:
                self._last = (last_millis, last_random + 1)
            else:
                self._last = (millis, secrets.randbits(79))  # leaves room to count up
            return self._last


_ids = _MonotonicIds()


def new_id(prefix: str) -> str:
    """``prefix_`` + 26 characters that sort by creation time (ms), then by creation order."""
    millis, randomness = _ids.next()
    return f"{prefix}_{_base32(millis, 10)}{_base32(randomness, 16)}"


def id_time(value: str) -> datetime:
    """The moment (to the millisecond, UTC) a ``new_id`` id was made.

    A record stamped with its own id's time sorts the same by id and by timestamp, which
    two separate clock reads could not promise (threads and processes interleave).
    """
    encoded = value.partition("_")[2][:10]
    millis = 0
    for char in encoded:
        millis = millis * 32 + _ALPHABET.index(char)
    return datetime.fromtimestamp(millis / 1000, UTC)


def looks_like(prefix: str, value: str) -> bool:
    """Whether ``value`` has the shape of an id ``new_id(prefix)`` makes."""
    return (
        len(value) == len(prefix) + 27
        and value.startswith(prefix + "_")
        and all(char in _ALPHABET for char in value[len(prefix) + 1 :])
    )


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def new_signing_secret() -> str:
    """A webhook signing secret as Standard Webhooks libraries expect it: ``whsec_`` +
    standard base64 of 32 random bytes (the HMAC key is those bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def digest(secret: str) -> str:
    """What is stored instead of a secret: its SHA-256, looked up by equality."""
    return hashlib.sha256(secret.encode()).hexdigest()
