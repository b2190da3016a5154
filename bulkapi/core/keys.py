"""Resource keys and the stable partition function."""

from __future__ import annotations

import re
import zlib
from typing import NamedTuple

#: What a resource type may look like.
TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,63}")
#: What a resource id may look like.
ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Ids the pattern allows but no URL can name: HTTP clients remove the dot segments
#: ``.`` and ``..`` from a path (RFC 3986 5.2.4), so ``/v1/resources/t/..`` would reach
#: ``/v1/resources/``. They are refused wherever an id is taken.
DOT_SEGMENTS = frozenset({".", ".."})
#: The error message for an invalid id, wherever one is refused.
ID_RULE = "Must match ^[A-Za-z0-9._:-]{1,128}$ and not be . or ..."


class ResourceKey(NamedTuple):
    type: str
    id: str


def is_valid_type(value: object) -> bool:
    return isinstance(value, str) and TYPE_PATTERN.fullmatch(value) is not None


def is_valid_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and ID_PATTERN.fullmatch(value) is not None
        and value not in DOT_SEGMENTS
    )


def partition_of(tenant_id: str, key: ResourceKey, partitions: int) -> int:
    """Every write to one key lands in one partition, forever, on every host.

    crc32 is stable across processes and Python versions (unlike ``hash``), which is
    what lets API processes and workers agree without talking to each other.
    """
    raw = f"{tenant_id}\x1f{key.type}\x1f{key.id}".encode()
    return zlib.crc32(raw) % partitions
