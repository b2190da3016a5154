"""Tenants and API keys. Only SHA-256 digests of keys and tokens are stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from bulkapi.ids import digest, new_id, new_secret, new_signing_secret
from bulkapi.store.database import as_utc, utcnow
from bulkapi.store.tables import api_keys, jobs, status_tokens, tenants


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a tenant, optionally limited to reading one job (status tokens)."""

    tenant_id: str
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    tenant: str
    created_at: datetime
    revoked_at: datetime | None


def ensure_tenant(conn: Connection, name: str) -> str:
    existing = conn.execute(select(tenants.c.id).where(tenants.c.name == name)).scalar()
    if existing is not None:
        return str(existing)
    tenant_id = new_id("ten")
    conn.execute(
        tenants.insert().values(
            id=tenant_id, name=name, signing_secret=new_signing_secret(), created_at=utcnow()
        )
    )
    return tenant_id


def signing_secret(conn: Connection, name: str, *, rotate: bool = False) -> str | None:
    """The tenant's webhook signing secret (a new one if ``rotate``); None if no tenant.

    A rotated secret signs every attempt made from then on, retries included.
    """
    if rotate:
        conn.execute(
            update(tenants)
            .where(tenants.c.name == name)
            .values(signing_secret=new_signing_secret())
        )
    found = conn.execute(select(tenants.c.signing_secret).where(tenants.c.name == name)).scalar()
    return None if found is None else str(found)


def create_key(conn: Connection, tenant_name: str) -> tuple[str, str]:
    """Create a key for the tenant (creating the tenant if new); return (key id, secret)."""
    tenant_id = ensure_tenant(conn, tenant_name)
    key_id, secret = new_id("key"), new_secret("bk")
    conn.execute(
        api_keys.insert().values(
            id=key_id, tenant_id=tenant_id, key_hash=digest(secret), created_at=utcnow()
        )
    )
    return key_id, secret


def revoke_key(conn: Connection, key_id: str) -> bool:
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return result.rowcount == 1


def list_keys(conn: Connection) -> list[KeyInfo]:
    rows = conn.execute(
        select(api_keys.c.id, tenants.c.name, api_keys.c.created_at, api_keys.c.revoked_at)
        .join(tenants, tenants.c.id == api_keys.c.tenant_id)
        .order_by(tenants.c.name, api_keys.c.created_at)
    )
    return [KeyInfo(r.id, r.name, as_utc(r.created_at), as_utc(r.revoked_at)) for r in rows]  # type: ignore[arg-type]


def authenticate(conn: Connection, secret: str) -> Principal | None:
    """Resolve a bearer secret: an API key, or a job's status token."""
    hashed = digest(secret)
    tenant_id = conn.execute(
        select(api_keys.c.tenant_id).where(
            api_keys.c.key_hash == hashed, api_keys.c.revoked_at.is_(None)
        )
    ).scalar()
    if tenant_id is not None:
        return Principal(tenant_id)
    job = conn.execute(
        select(jobs.c.id, jobs.c.tenant_id)
        .join(status_tokens, status_tokens.c.job_id == jobs.c.id)
        .where(status_tokens.c.token_hash == hashed)
    ).first()
    return None if job is None else Principal(job.tenant_id, job_id=job.id)
