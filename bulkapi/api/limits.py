"""Back-pressure: a per-tenant request rate (limits library) and a pending-work cap.

The rate is counted in Redis when a broker is configured, so every API process shares
one count; embedded mode counts in memory.
"""

from __future__ import annotations

import logging
import math
import time

from limits import parse, storage, strategies
from limits.errors import StorageError
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from bulkapi.config import Settings
from bulkapi.core.errors import RateLimited
from bulkapi.core.operations import OpStatus
from bulkapi.store.tables import operations

logger = logging.getLogger(__name__)


#: Seconds between two warnings that the shared rate count cannot be reached.
_WARN_EVERY_SECONDS = 60.0


class TenantRateLimiter:
    """Counts requests per tenant; fails open when Redis is away.

    The limit protects the service; it must not be the reason the service stops. An
    unreachable Redis would otherwise turn every authenticated request into an error,
    although neither admission nor sync writes need Redis. So a request the count cannot
    be taken for is let through, and a warning is logged (at most once a minute).
    """

    def __init__(self, settings: Settings) -> None:
        self._item = parse(settings.rate_limit) if settings.rate_limit else None
        counts = (
            storage.MemoryStorage()
            if settings.broker_url is None
            else storage.RedisStorage(
                settings.broker_url,
                key_prefix=f"{settings.broker_namespace}-rate",
                wrap_exceptions=True,
                socket_timeout=settings.redis_timeout,
                socket_connect_timeout=settings.redis_timeout,
            )
        )
        self._limiter = strategies.FixedWindowRateLimiter(counts)
        self._warned_at = -math.inf

    def check(self, tenant_id: str) -> None:
        """Count one request; raise ``RateLimited`` (429) once the tenant is over its rate."""
        if self._item is None:
            return
        try:
            if self._limiter.hit(self._item, tenant_id):
                return
            reset = self._limiter.get_window_stats(self._item, tenant_id).reset_time
        except StorageError:
            self._warn()
            return
        raise RateLimited(
            "Too many requests for this tenant; slow down.",
            retry_after=max(1, math.ceil(reset - time.time())),
        )

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_SECONDS:
            self._warned_at = now
            logger.warning("rate limit not enforced: its Redis count is unreachable", exc_info=True)


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
