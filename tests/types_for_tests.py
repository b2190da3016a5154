"""Resource types the test suite registers (BULKAPI_TYPES=tests.types_for_tests).

- ``guarded`` documents say how a rule should treat them: ``{"reject": true}`` is refused
  by the rule (rule_rejected); ``{"poison": true}`` makes the rule crash on every attempt.
- ``recorded``: every applied write runs the ``record`` effect, which appends the change
  to the file named by ``TEST_BULKAPI_EFFECT_LOG`` (one JSON line per attempt, written by
  whichever process ran it). ``{"effect_fails": n}`` fails its first n attempts;
  ``{"effect_fails": "always"}`` fails every one. ``{"effect_blocks": true}`` makes the
  first attempt hang (for a test to kill the worker running it).
- ``window``: ``start`` <= ``end`` (a cross-field check only a whole document can fail).
- ``fragile``: its schema's validator crashes (not a ``ValidationError``) on ``n`` = 13.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
from marshmallow import Schema, ValidationError, fields, validates_schema

from bulkapi.core.apply import Change, RuleRejected
from bulkapi.types import Effect, EffectEvent, ResourceType

#: Environment variable naming the effect log (a path every test process can append to).
EFFECT_LOG = "TEST_BULKAPI_EFFECT_LOG"


#: How long a blocking effect hangs: longer than any test waits for it.
BLOCK_SECONDS = 600


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
    document = event.after if event.after is not None else event.before or {}
    if document.get("effect_blocks") and event.attempt == 1:
        time.sleep(BLOCK_SECONDS)
    failures = document.get("effect_fails", 0)
    if failures == "always" or (isinstance(failures, int) and event.attempt <= failures):
        raise DownstreamError(f"downstream refused attempt {event.attempt}")


class WindowSchema(Schema):
    start = fields.Integer(required=True, strict=True)
    end = fields.Integer(required=True, strict=True)

    @validates_schema
    def end_not_before_start(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "start" in data and "end" in data and data["end"] < data["start"]:
            raise ValidationError("end must not be before start", "end")


#: The value of ``n`` that makes the ``fragile`` schema crash.
FRAGILE_N = 13


def _crash_on_fragile(value: int) -> None:
    if value == FRAGILE_N:
        raise ZeroDivisionError("the validator divided by zero")


class FragileSchema(Schema):
    n = fields.Integer(validate=_crash_on_fragile)


TYPES = [
    ResourceType("guarded", rules=(guard,)),
    ResourceType("recorded", effects=(Effect("record", record),)),
    ResourceType("window", schema=WindowSchema),
    ResourceType("fragile", schema=FragileSchema),
]
