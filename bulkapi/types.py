"""What an operator writes to teach bulkapi its resource types (``BULKAPI_TYPES``).

A types module is any importable module with a ``TYPES`` iterable of ``ResourceType``::

    TYPES = [ResourceType("lead", schema=LeadSchema, rules=(...,), effects=(...,))]

See docs/extending.md for a walk-through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

from marshmallow import Schema

from bulkapi.core.apply import Change, Rule, RuleRejected

__all__ = ["Change", "Effect", "EffectEvent", "ResourceType", "Rule", "RuleRejected"]


@dataclass(frozen=True, slots=True)
class EffectEvent:
    """One committed change, as a side-effect handler sees it (on every attempt).

    ``idempotency_key`` names the write that made the change and is the same on every
    attempt: effects run at least once, so pass it on to the system being called.
    """

    idempotency_key: str
    #: The effect being run (one write may trigger several, sharing the key above).
    effect: str
    tenant_id: str
    type: str
    id: str
    #: ``upsert``, ``patch`` or ``delete``.
    op: str
    #: The version this change produced.
    version: int
    #: The document before and after the change (None: absent).
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    #: 1 on the first attempt, counting up on each retry.
    attempt: int
    #: The bulk job the write belonged to; None for a synchronous write.
    job_id: str | None


#: A side-effect handler: returns when done; any exception means "try again later".
EffectHandler = Callable[[EffectEvent], None]
#: Decides, at apply time, whether a change calls for the effect.
EffectCondition = Callable[[Change], bool]


@dataclass(frozen=True, slots=True)
class Effect:
    """Work that must follow a committed change, outside the write's transaction.

    Effects of one resource run one at a time in the order its writes were applied
    (its version order, then the order effects are declared here).
    """

    name: str
    handler: EffectHandler
    #: None: every applied write of the type triggers the effect.
    when: EffectCondition | None = None


@dataclass(frozen=True)
class ResourceType:
    name: str
    _: KW_ONLY
    #: Checks ``data`` on sync writes and at bulk admission (a schema class or instance).
    schema: type[Schema] | Schema | None = None
    #: Business rules run at apply time, in order, on the current and proposed document.
    rules: tuple[Rule, ...] = ()
    #: Side effects run after commit, per resource in order, at least once.
    effects: tuple[Effect, ...] = ()
    #: Shown to integrators by ``GET /v1/types``.
    description: str = ""
