"""The dispatch lanes: which queue a wake-up travels on.

A ``StrEnum``, so a lane is still its plain name wherever it leaves the process: in
the Redis flag keys (``<namespace>:scheduled:<lane>:<p>``) and in log lines.
"""

from __future__ import annotations

from enum import StrEnum


class Lane(StrEnum):
    #: Drains of small jobs, taken first.
    PROMPT = "prompt"
    #: Every other drain, and the continuation of any drain that ran out of budget.
    REGULAR = "regular"
    #: Side effects of committed writes.
    EFFECTS = "effects"
    #: Webhook deliveries (one shard, not a partition).
    WEBHOOKS = "webhooks"
