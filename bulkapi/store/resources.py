"""Single-resource reads and synchronous writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from bulkapi.core.apply import ResourceState
from bulkapi.core.errors import (
    ApplyFailed,
    NotFound,
    ResourceBusy,
    RuleRejectedWrite,
    ValidationFailed,
)
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpError, OpKind, OpStatus
from bulkapi.core.preconditions import Preconditions
from bulkapi.ids import new_id
from bulkapi.store.database import as_utc, dialect_insert
from bulkapi.store.drain import Apply
from bulkapi.store.effects import AppliedChange, record_effects
from bulkapi.store.tables import operations, resources


@dataclass(frozen=True, slots=True)
class StoredResource:
    type: str
    id: str
    version: int
    data: dict[str, Any] | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WriteResult:
    resource: StoredResource
    created: bool
    #: Side effects the write recorded (to be run after commit).
    effects: int = 0


def _where_key(tenant_id: str, key: ResourceKey) -> tuple[Any, ...]:
    r = resources
    return (r.c.tenant_id == tenant_id, r.c.type == key.type, r.c.rid == key.id)


def get_resource(conn: Connection, tenant_id: str, key: ResourceKey) -> StoredResource:
    r = resources
    row = conn.execute(
        select(r.c.version, r.c.data, r.c.updated_at).where(
            *_where_key(tenant_id, key), r.c.data.is_not(None)
        )
    ).first()
    if row is None:
        raise NotFound(f"No resource {key.type}/{key.id}.")
    return StoredResource(key.type, key.id, row.version, row.data, as_utc(row.updated_at))  # type: ignore[arg-type]


def list_resources(
    conn: Connection, tenant_id: str, rtype: str, limit: int, after: str | None
) -> list[StoredResource]:
    r = resources
    query = select(r.c.rid, r.c.version, r.c.data, r.c.updated_at).where(
        r.c.tenant_id == tenant_id, r.c.type == rtype, r.c.data.is_not(None)
    )
    if after is not None:
        query = query.where(r.c.rid > after)
    rows = conn.execute(query.order_by(r.c.rid).limit(limit))
    return [
        StoredResource(rtype, row.rid, row.version, row.data, as_utc(row.updated_at))  # type: ignore[arg-type]
        for row in rows
    ]


def oldest_pending_job(conn: Connection, tenant_id: str, key: ResourceKey) -> str | None:
    o = operations
    return conn.execute(
        select(o.c.job_id)
        .where(
            o.c.tenant_id == tenant_id,
            o.c.type == key.type,
            o.c.rid == key.id,
            o.c.status == OpStatus.PENDING.value,
        )
        .order_by(o.c.seq)
        .limit(1)
    ).scalar()


def _lock_state(conn: Connection, tenant_id: str, key: ResourceKey) -> ResourceState | None:
    r = resources
    row = conn.execute(
        select(r.c.version, r.c.data).where(*_where_key(tenant_id, key)).with_for_update()
    ).first()
    return None if row is None else ResourceState(row.version, row.data)


def _lock_or_create(
    conn: Connection, tenant_id: str, key: ResourceKey, now: datetime
) -> ResourceState:
    """Lock the key's row, creating an absent placeholder first: one round trip."""
    r = resources
    insert = dialect_insert(conn, r).values(
        tenant_id=tenant_id,
        type=key.type,
        rid=key.id,
        version=0,
        admitted_seq=0,
        created_at=now,
        updated_at=now,
    )
    row = conn.execute(
        insert.on_conflict_do_update(
            index_elements=[r.c.tenant_id, r.c.type, r.c.rid],
            set_={"admitted_seq": r.c.admitted_seq},  # a no-op update: takes the row lock
        ).returning(r.c.version, r.c.data)
    ).one()
    return ResourceState(row.version, row.data)


def write_resource(
    conn: Connection,
    tenant_id: str,
    operation: Operation,
    now: datetime,
    apply: Apply,
    *,
    partition: int,
    preconditions: Preconditions,
) -> WriteResult:
    """Apply one write now, unless accepted bulk work on the key must go first.

    The key's row lock is what admissions take to hand out sequence numbers, so while it
    is held no bulk operation can be admitted for the key, and the pending check below
    sees every one admitted before.
    """
    key = operation.key
    if operation.kind is OpKind.UPSERT:
        state = _lock_or_create(conn, tenant_id, key, now)
    else:
        found = _lock_state(conn, tenant_id, key)
        if found is None:
            raise NotFound(f"No resource {key.type}/{key.id}.")
        state = found
    holder = oldest_pending_job(conn, tenant_id, key)
    if holder is not None:
        raise ResourceBusy(
            f"{key.type}/{key.id} has accepted bulk operations not yet applied.", job_id=holder
        )
    if operation.kind is not OpKind.UPSERT and not state.exists:
        # Without preconditions this is a 404, so they are not evaluated (RFC 9110 13.2.1).
        raise NotFound(f"No resource {key.type}/{key.id}.")
    preconditions.check(state, f"{key.type}/{key.id}")
    outcome = apply(state, operation)
    if outcome.error is OpError.RULE_REJECTED:
        if outcome.details:
            raise ValidationFailed(outcome.message or "invalid document", dict(outcome.details))
        raise RuleRejectedWrite(outcome.message or "rejected by a business rule")
    if outcome.error is not None:
        raise ApplyFailed(outcome.message or "the write could not be applied")
    r = resources
    conn.execute(
        update(r)
        .where(*_where_key(tenant_id, key))
        .values(
            version=outcome.state.version,
            data=outcome.state.data,
            admitted_seq=r.c.admitted_seq + 1,
            updated_at=now,
        )
    )
    changes = (
        [
            AppliedChange(
                tenant_id,
                key,
                partition,
                new_id("wr"),
                None,
                None,
                operation.kind,
                outcome.state.version,
                state.data,
                outcome.state.data,
                outcome.effects,
            )
        ]
        if outcome.effects
        else []
    )
    recorded = record_effects(conn, changes, now)
    stored = StoredResource(key.type, key.id, outcome.state.version, outcome.state.data, now)
    return WriteResult(
        stored, created=operation.kind is OpKind.UPSERT and not state.exists, effects=recorded
    )
