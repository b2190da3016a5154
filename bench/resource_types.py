"""The resource types every benchmark service loads (``BULKAPI_TYPES=bench.resource_types``).

- ``checked``: a marshmallow schema for the documents every case writes
  (``bench.client.document``), so admission pays for validating each of them.
- ``stamped``: every applied write runs the ``stamp`` effect, which appends one line
  (the resource id and the time) to the file named by ``BENCH_EFFECT_LOG``. It does
  next to nothing on purpose: what the effects case measures is bulkapi's machinery.

Any other type (the cases use ``item``) is free-form.
"""

from __future__ import annotations

import os
import time

import orjson
from marshmallow import Schema, fields

from bulkapi.types import Effect, EffectEvent, ResourceType

#: Environment variable naming the file the ``stamp`` effect appends to.
EFFECT_LOG = "BENCH_EFFECT_LOG"


class ItemSchema(Schema):
    name = fields.String(required=True)
    n = fields.Integer(required=True, strict=True)
    tags = fields.List(fields.String())
    ok = fields.Boolean()


def stamp(event: EffectEvent) -> None:
    """Record that the effect ran, and when (one append: O_APPEND writes are atomic)."""
    line = orjson.dumps({"id": event.id, "at": time.time()}) + b"\n"
    with open(os.environ[EFFECT_LOG], "ab") as log:
        log.write(line)


TYPES = [
    ResourceType("checked", schema=ItemSchema, description="The bench's documents, validated."),
    ResourceType(
        "stamped", effects=(Effect("stamp", stamp),), description="Each write runs one effect."
    ),
]
