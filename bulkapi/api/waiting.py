"""``waiting_on`` of a job read on its own: the jobs it waits behind, if it is open."""

from __future__ import annotations

from bulkapi.api.context import runtime
from bulkapi.store.database import reading
from bulkapi.store.jobs import JobRecord
from bulkapi.store.waiting import Blocker, blockers


def waiting_on_of(tenant_id: str, job: JobRecord) -> list[Blocker]:
    """Nothing for a finished job (no query); else one bounded query."""
    if job.status.is_terminal or job.counts.pending == 0:
        return []
    with reading(runtime().engine) as conn:
        return blockers(conn, tenant_id, job.id)
