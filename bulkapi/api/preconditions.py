"""Parsing the conditional-request and preference headers single-resource writes honour."""

from __future__ import annotations

import re

from bulkapi.core.errors import PreconditionFailed

#: Longest ``Prefer: wait=N`` a sync write honours (SPEC §3).
MAX_WRITE_WAIT_SECONDS = 30
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?", re.IGNORECASE)


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(header: str | None) -> int | None:
    """The version an ``If-Match: "<v>"`` demands, or None when absent.

    Anything but one strong version tag can never match a version, so it fails the
    precondition rather than being ignored.
    """
    if header is None:
        return None
    value = header.strip()
    if value.startswith('"') and value.endswith('"') and value[1:-1].isdigit():
        return int(value[1:-1])
    raise PreconditionFailed("version_mismatch", f"If-Match {value!r} matches no version.")


def parse_prefer_wait(header: str | None) -> float:
    """Seconds the caller lets a busy write wait (``Prefer: wait=N``), capped at 30."""
    if not header:
        return 0.0
    match = _WAIT.search(header)
    return 0.0 if match is None else min(float(match.group(1)), MAX_WRITE_WAIT_SECONDS)
