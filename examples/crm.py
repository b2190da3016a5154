"""An example types module for a small CRM: ``BULKAPI_TYPES=examples.crm``.

- ``lead``: ``score`` (an integer >= 0) is required; ``status`` is one of new, contacted,
  qualified or lost; a lead cannot go back to ``new`` once it has left it (a rule).
- ``org``: when ``allow_custom_sso`` switches from true to false, the org's SSO
  connections must be unlinked. That call goes to a system we do not own, so it is a side
  effect: it runs after the change is committed, in the org's write order, at least once,
  retried with backoff. Set ``CRM_SSO_UNLINK_URL`` to have it POST there; without it the
  effect only logs what it would do.

docs/extending.md walks through this module.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from typing import Any

from marshmallow import Schema, fields, validate

from bulkapi.types import Change, Effect, EffectEvent, ResourceType, RuleRejected

logger = logging.getLogger(__name__)

LEAD_STATUSES = ("new", "contacted", "qualified", "lost")
#: Seconds the SSO service gets to answer before the attempt counts as failed.
SSO_TIMEOUT_SECONDS = 10


class LeadSchema(Schema):
    # strict: "5" is not an integer here; bulkapi stores documents as sent.
    score = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    status = fields.String(validate=validate.OneOf(LEAD_STATUSES))
    name = fields.String(validate=validate.Length(max=200))
    email = fields.Email()


def lead_never_returns_to_new(change: Change) -> None:
    """A lead that has been worked on cannot become ``new`` again."""
    before = change.current or {}
    after = change.proposed or {}
    if before.get("status") not in (None, "new") and after.get("status") == "new":
        raise RuleRejected(f"a {before['status']} lead cannot go back to new")


class StrictBoolean(fields.Boolean):
    """Only JSON true and false: marshmallow's Boolean also takes "yes", "on", 1 and 0
    (and bulkapi stores documents as sent, so 0 would stay 0)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class OrgSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    allow_custom_sso = StrictBoolean()
    domains = fields.List(fields.String(validate=validate.Length(min=1, max=253)))


def custom_sso_switched_off(change: Change) -> bool:
    """True when this write turns ``allow_custom_sso`` from true to false."""
    before = change.current or {}
    after = change.proposed or {}
    return before.get("allow_custom_sso") is True and after.get("allow_custom_sso") is False


def unlink_sso_connections(event: EffectEvent) -> None:
    """Ask the SSO service to drop the org's connections.

    Runs at least once: the idempotency key (the write's operation id) lets the SSO
    service recognise a repeat. Raising makes bulkapi retry later, with backoff.
    """
    url = os.environ.get("CRM_SSO_UNLINK_URL")
    if not url:
        logger.info(
            "would unlink SSO connections of org %s (version %s, key %s)",
            event.id,
            event.version,
            event.idempotency_key,
        )
        return
    body = json.dumps({"org_id": event.id, "version": event.version}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": event.idempotency_key},
    )
    with urllib.request.urlopen(request, timeout=SSO_TIMEOUT_SECONDS) as response:
        if not 200 <= response.status < 300:
            raise RuntimeError(f"SSO service answered {response.status}")


TYPES = [
    ResourceType(
        "lead",
        schema=LeadSchema,
        rules=(lead_never_returns_to_new,),
        description="A sales lead: score (integer >= 0, required) and status.",
    ),
    ResourceType(
        "org",
        schema=OrgSchema,
        effects=(Effect("unlink_sso", unlink_sso_connections, when=custom_sso_switched_off),),
        description="A customer organisation; turning allow_custom_sso off unlinks its SSO.",
    ),
]
