"""Resource types the test suite registers (BULKAPI_TYPES=tests.types_for_tests).

``guarded`` documents say how a rule should treat them: ``{"reject": true}`` is refused
by the rule (rule_rejected); ``{"poison": true}`` makes the rule crash on every attempt.
"""

from __future__ import annotations

from bulkapi.core.apply import Change, RuleRejected
from bulkapi.types import ResourceType


class PoisonError(RuntimeError):
    pass


def guard(change: Change) -> None:
    proposed = change.proposed or {}
    if proposed.get("poison"):
        raise PoisonError("this document always breaks the rule")
    if proposed.get("reject"):
        raise RuleRejected("documents with reject=true are refused")


TYPES = [ResourceType("guarded", rules=(guard,))]
