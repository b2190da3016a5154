"""Synchronous single-resource writes, waiting (if asked) for accepted bulk work ahead."""

from __future__ import annotations

import time

from sqlalchemy import Engine

from bulkapi.core.errors import ResourceBusy
from bulkapi.core.operations import Operation
from bulkapi.core.preconditions import Preconditions
from bulkapi.store.database import utcnow
from bulkapi.store.drain import Apply
from bulkapi.store.resources import WriteResult, write_resource

#: Polling interval bounds while waiting for a busy key to drain.
_FIRST_POLL_SECONDS = 0.02
_LAST_POLL_SECONDS = 0.25


def write_now_or_wait(
    engine: Engine,
    apply: Apply,
    tenant_id: str,
    operation: Operation,
    *,
    partition: int,
    wait_seconds: float,
    preconditions: Preconditions,
    retry_after: int,
) -> WriteResult:
    """Apply the write; while bulk operations on the key are pending, wait up to
    ``wait_seconds`` for them, then answer busy (with a Retry-After hint)."""
    deadline = time.monotonic() + wait_seconds
    poll = _FIRST_POLL_SECONDS
    while True:
        try:
            with engine.begin() as conn:
                return write_resource(
                    conn,
                    tenant_id,
                    operation,
                    utcnow(),
                    apply,
                    partition=partition,
                    preconditions=preconditions,
                )
        except ResourceBusy as busy:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                busy.extra["retry_after"] = retry_after
                raise
            time.sleep(min(poll, remaining))
            poll = min(poll * 2, _LAST_POLL_SECONDS)
