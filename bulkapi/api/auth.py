"""Bearer authentication: API keys for tenants, status tokens for reading one job."""

from __future__ import annotations

from flask import current_app, g, request

from bulkapi.api.context import runtime
from bulkapi.core.errors import NotFound, Unauthorized
from bulkapi.store.tenants import Principal, authenticate


def _principal() -> Principal:
    cached: Principal | None = g.get("principal")
    if cached is not None:
        return cached
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.")
    with runtime().engine.connect() as conn:
        principal = authenticate(conn, secret.strip())
    if principal is None:
        raise Unauthorized("The API key or token is not valid.")
    g.principal = principal
    current_app.extensions["bulkapi.rate"].check(principal.tenant_id)
    return principal


def require_tenant() -> str:
    """The caller's tenant; status tokens are refused (they only read their job)."""
    principal = _principal()
    if principal.job_id is not None:
        raise Unauthorized("A job status token only reads its own job.")
    return principal.tenant_id


def require_job_reader(job_id: str) -> str:
    """The tenant allowed to read ``job_id``: by API key, or by that job's status token."""
    principal = _principal()
    if principal.job_id is not None and principal.job_id != job_id:
        raise NotFound(f"No job {job_id}.")
    return principal.tenant_id
