"""What one write is, whichever path (bulk or single) it came in by."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bulkapi.core.keys import ResourceKey


class OpKind(StrEnum):
    UPSERT = "upsert"
    PATCH = "patch"
    DELETE = "delete"


class OpStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OpError(StrEnum):
    """Per-operation failure codes."""

    VERSION_MISMATCH = "version_mismatch"
    NOT_FOUND = "not_found"
    RULE_REJECTED = "rule_rejected"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    APPLY_FAILED = "apply_failed"


@dataclass(frozen=True, slots=True)
class Operation:
    kind: OpKind
    key: ResourceKey
    data: dict[str, Any] | None = None
    if_version: int | None = None
