"""Conditional sync writes: what ``If-Match`` and ``If-None-Match: *`` demand of a key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bulkapi.core.apply import ResourceState
from bulkapi.core.errors import PreconditionFailed

#: ``If-Match: *``: any current version will do, as long as the resource exists.
ANY_VERSION: Literal["*"] = "*"


@dataclass(frozen=True, slots=True)
class Preconditions:
    #: ``If-Match``: None when absent, ``ANY_VERSION``, or the versions one of which must
    #: be current (empty when no tag could name a version: it never matches).
    if_match: frozenset[int] | Literal["*"] | None = None
    #: ``If-None-Match: *``: only if the resource does not exist.
    if_none_match: bool = False

    def check(self, state: ResourceState, name: str) -> None:
        """Raise ``PreconditionFailed`` unless ``state`` (the key's locked, current state,
        after all accepted work ahead of this write) satisfies every header."""
        if self.if_none_match and state.exists:
            raise PreconditionFailed("already_exists", f"{name} already exists.")
        if self.if_match is None:
            return
        if not state.exists:
            # If-Match needs a current representation (RFC 9110 13.1.1); a tombstone's
            # version names a representation that is gone.
            raise PreconditionFailed("version_mismatch", f"{name} does not exist.")
        if self.if_match != ANY_VERSION and state.version not in self.if_match:
            wanted = ", ".join(f'"{v}"' for v in sorted(self.if_match)) or "no version"
            raise PreconditionFailed(
                "version_mismatch",
                f"If-Match names {wanted}, but {name} is at version {state.version}.",
            )
