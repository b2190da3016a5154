"""What a job waits behind: other jobs holding earlier pending operations on its keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, literal, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from bulkapi.core.operations import OpStatus
from bulkapi.store.database import is_postgres
from bulkapi.store.tables import operations

#: Pending operations of the job looked at per read, in request order: the query's cost
#: is bounded by this, however large the job.
SCANNED_OPERATIONS = 1000
#: Blocking jobs named at most.
MAX_BLOCKERS = 10


@dataclass(frozen=True, slots=True)
class Blocker:
    job_id: str
    #: How many of the job's (scanned) operations wait behind this one.
    operations: int


def _pending(status: ColumnElement[str]) -> ColumnElement[bool]:
    """``status = 'pending'`` with the value written into the SQL, so SQLite may use the
    partial indexes on pending operations (it cannot prove a bound value matches)."""
    return status == literal(OpStatus.PENDING.value, literal_execute=True)


def blockers(conn: Connection, tenant_id: str, job_id: str) -> list[Blocker]:
    """The tenant's other jobs with a pending operation of a lower sequence number on a
    key among the job's first ``SCANNED_OPERATIONS`` pending operations, oldest job first.

    Keys are per tenant, so the join names the tenant: another tenant's job never
    appears. Each of those keys costs one range of ``ix_operations_pending_key``.
    """
    mine = operations.alias("mine")
    scanned = (
        select(mine.c.type, mine.c.rid, mine.c.seq)
        .where(mine.c.job_id == job_id, _pending(mine.c.status))
        .order_by(mine.c.idx)
        .limit(SCANNED_OPERATIONS)
        .subquery()
    )
    earlier = operations.alias("earlier")
    ahead = (
        earlier.c.tenant_id == tenant_id,
        earlier.c.type == scanned.c.type,
        earlier.c.rid == scanned.c.rid,
        earlier.c.seq < scanned.c.seq,
        _pending(earlier.c.status),
    )
    blocking: Any = earlier
    source: Any = scanned.join(earlier, and_(*ahead))
    if is_postgres(conn):
        # Lateral, and kept from being flattened into a plain join (OFFSET 0), so each
        # scanned key is looked up by the index on its own (tenant, type, id): as a join,
        # a planner without statistics scanned the tenant's backlog once per key. (SQLite
        # has no LATERAL, and its planner looks each key up by the index anyway.)
        blocking = select(earlier.c.job_id).where(*ahead).offset(0).lateral("ahead")
        source = scanned.join(blocking, true())
    rows = conn.execute(
        select(blocking.c.job_id, func.count().label("waiting"))
        .select_from(source)
        .group_by(blocking.c.job_id)
        .order_by(blocking.c.job_id)
        .limit(MAX_BLOCKERS)
    )
    return [Blocker(row.job_id, int(row.waiting)) for row in rows]
