"""The resource types every benchmark service loads (``BULKAPI_TYPES=bench.resource_types``).

- ``window``: a marshmallow schema with a cross-field check (``start`` <= ``end``), so
  admission pays for whole-document validation.
- ``stamped``: every applied write runs the ``stamp`` effect, which appends one line
  (the resource id and the time) to the file named by ``BENCH_EFFECT_LOG``. It does
  next to nothing on purpose: what the effects case measures is bulkapi's machinery.

Any other type (the cases use ``item``) is free-form.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
from marshmallow import Schema, ValidationError, fields, validates_schema

from bulkapi.types import Effect, EffectEvent, ResourceType

#: Environment variable naming the file the ``stamp`` effect appends to.
EFFECT_LOG = "BENCH_EFFECT_LOG"


class WindowSchema(Schema):
    start = fields.Integer(required=True, strict=True)
    end = fields.Integer(required=True, strict=True)

    @validates_schema
    def end_not_before_start(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "start" in data and "end" in data and data["end"] < data["start"]:
            raise ValidationError("end must not be before start", "end")


def stamp(event: EffectEvent) -> None:
    """Record that the effect ran, and when (one append: O_APPEND writes are atomic)."""
    line = orjson.dumps({"id": event.id, "at": time.time()}) + b"\n"
    with open(os.environ[EFFECT_LOG], "ab") as log:
        log.write(line)


TYPES = [
    ResourceType("window", schema=WindowSchema, description="start <= end, both integers."),
    ResourceType(
        "stamped", effects=(Effect("stamp", stamp),), description="Each write runs one effect."
    ),
]
