"""Parsing the conditional-request and preference headers single-resource writes honour."""

from __future__ import annotations

import re
from typing import Literal

from bulkapi.core.preconditions import ANY_VERSION

#: Longest ``Prefer: wait=N`` a sync write honours.
MAX_WRITE_WAIT_SECONDS = 30
#: A strong entity tag naming a version: ``"12"`` (ASCII digits only).
_VERSION_TAG = re.compile(r'"([0-9]{1,18})"')
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?([0-9]+(?:\.[0-9]+)?)\"?", re.IGNORECASE)


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(header: str | None) -> frozenset[int] | Literal["*"] | None:
    """What ``If-Match`` demands: None when absent, ``*``, or the versions its strong
    entity tags name (RFC 9110 13.1.1). Weak or malformed tags can never match a version
    (strong comparison), so they are left out; none left means the write must fail."""
    if header is None:
        return None
    if header.strip() == ANY_VERSION:
        return ANY_VERSION
    return frozenset(
        int(found[1]) for tag in header.split(",") if (found := _VERSION_TAG.fullmatch(tag.strip()))
    )


def none_match(header: str | None, version: int) -> bool:
    """Whether a GET's ``If-None-Match`` names the current version, so the answer is 304.

    Weak comparison (RFC 9110 13.1.2): ``W/"3"`` matches ``"3"``; ``*`` matches any
    version of an existing resource; a list matches if any of its tags does.
    """
    if header is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return ANY_VERSION in tags or etag(version) in tags


def parse_prefer_wait(header: str | None) -> float:
    """Seconds the caller lets a busy write wait (``Prefer: wait=N``), capped at 30."""
    if not header:
        return 0.0
    match = _WAIT.search(header)
    return 0.0 if match is None else min(float(match.group(1)), MAX_WRITE_WAIT_SECONDS)
