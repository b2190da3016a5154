"""Resource types the test suite registers (BULKAPI_TYPES=tests.types_for_tests).

- ``guarded`` documents say how a rule should treat them: ``{"reject": true}`` is refused
  by the rule (rule_rejected); ``{"poison": true}`` makes the rule crash on every attempt.
- ``recorded``: every applied write runs the ``record`` effect, which appends the change
  to the file named by ``TEST_BULKAPI_EFFECT_LOG`` (one JSON line per attempt, written by
  whichever process ran it). ``{"effect_fails": n}`` fails its first n attempts;
  ``{"effect_fails": "always"}`` fails every one.
- The example CRM types (``lead``, ``org``) too, so the suite runs them on both modes.
"""

from __future__ import annotations

import os

import orjson

from bulkapi.core.apply import Change, RuleRejected
from bulkapi.types import Effect, EffectEvent, ResourceType
from examples import crm

#: Environment variable naming the effect log (a path every test process can append to).
EFFECT_LOG = "TEST_BULKAPI_EFFECT_LOG"


class PoisonError(RuntimeError):
    pass


class DownstreamError(RuntimeError):
    pass


def guard(change: Change) -> None:
    proposed = change.proposed or {}
    if proposed.get("poison"):
        raise PoisonError("this document always breaks the rule")
    if proposed.get("reject"):
        raise RuleRejected("documents with reject=true are refused")


def record(event: EffectEvent) -> None:
    line = {
        "tenant_id": event.tenant_id,
        "id": event.id,
        "version": event.version,
        "op": event.op,
        "idempotency_key": event.idempotency_key,
        "job_id": event.job_id,
        "attempt": event.attempt,
        "before": event.before,
        "after": event.after,
        "pid": os.getpid(),
    }
    with open(os.environ[EFFECT_LOG], "ab") as log:  # one write per line: O_APPEND is atomic
        log.write(orjson.dumps(line) + b"\n")
    failures = (event.after or event.before or {}).get("effect_fails", 0)
    if failures == "always" or (isinstance(failures, int) and event.attempt <= failures):
        raise DownstreamError(f"downstream refused attempt {event.attempt}")


TYPES = [
    ResourceType("guarded", rules=(guard,)),
    ResourceType("recorded", effects=(Effect("record", record),)),
    *crm.TYPES,
]
