"""Back-pressure: a per-tenant request rate (limits library) and a pending-work cap.

The rate is counted in Redis when a broker is configured, so every API process shares
one count; embedded mode counts in memory.
"""

from __future__ import annotations

import math
import time

from limits import parse, storage, strategies
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from bulkapi.config import Settings
from bulkapi.core.errors import RateLimited
from bulkapi.core.operations import OpStatus
from bulkapi.store.tables import operations


class TenantRateLimiter:
    def __init__(self, settings: Settings) -> None:
        self._item = parse(settings.rate_limit) if settings.rate_limit else None
        counts = (
            storage.MemoryStorage()
            if settings.broker_url is None
            else storage.storage_from_string(
                settings.broker_url, key_prefix=f"{settings.broker_namespace}-rate"
            )
        )
        self._limiter = strategies.FixedWindowRateLimiter(counts)

    def check(self, tenant_id: str) -> None:
        """Count one request; raise ``RateLimited`` (429) once the tenant is over its rate."""
        if self._item is None or self._limiter.hit(self._item, tenant_id):
            return
        reset = self._limiter.get_window_stats(self._item, tenant_id).reset_time
        raise RateLimited(
            "Too many requests for this tenant; slow down.",
            retry_after=max(1, math.ceil(reset - time.time())),
        )


def check_pending_cap(conn: Connection, tenant_id: str, adding: int, cap: int) -> None:
    """Refuse new work while the tenant already has ``cap`` operations waiting.

    A soft cap: two admissions racing may both pass, overshooting by one request.
    """
    o = operations
    pending = conn.execute(
        select(func.count())
        .select_from(o)
        .where(o.c.tenant_id == tenant_id, o.c.status == OpStatus.PENDING.value)
    ).scalar_one()
    if pending + adding > cap:
        raise RateLimited(
            f"{pending} operations are still pending for this tenant (cap {cap}).",
            code="too_many_pending_operations",
            retry_after=5,
        )
