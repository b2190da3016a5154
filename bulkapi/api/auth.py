"""Bearer authentication: API keys for tenants, status tokens for reading one job."""

from __future__ import annotations

import threading
import time

from flask import current_app, g, request
from sqlalchemy import Engine

from bulkapi.api.context import runtime
from bulkapi.core.errors import NotFound, Unauthorized
from bulkapi.ids import digest, looks_like
from bulkapi.store.database import reading
from bulkapi.store.tenants import Principal, authenticate

#: Most credentials remembered per process.
_CACHE_LIMIT = 10_000


class CredentialCache:
    """Remembers valid credentials for a few seconds, saving a query on every request.

    Only successes are cached, keyed by the credential's digest, so a revoked key keeps
    working for at most ``ttl`` seconds in each process that saw it.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def resolve(self, engine: Engine, secret: str) -> Principal | None:
        key = digest(secret)
        now = time.monotonic()
        found = self._entries.get(key)  # one dict read is atomic: no lock on the hot path
        if found is not None and found[1] > now:
            return found[0]
        with reading(engine) as conn:
            principal = authenticate(conn, secret)
        if principal is not None and self.ttl > 0:
            with self._lock:
                if len(self._entries) >= _CACHE_LIMIT:
                    self._entries.clear()
                self._entries[key] = (principal, now + self.ttl)
        return principal


def _principal() -> Principal:
    cached: Principal | None = g.get("principal")
    if cached is not None:
        return cached
    scheme, _, secret = request.environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.")
    extensions = current_app.extensions
    cache: CredentialCache = extensions["bulkapi.credentials"]
    principal = cache.resolve(runtime().engine, secret)
    if principal is None:
        raise Unauthorized("The API key or token is not valid.")
    g.principal = principal
    extensions["bulkapi.rate"].check(principal.tenant_id)
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
    check_job_id(job_id)
    if principal.job_id is not None and principal.job_id != job_id:
        raise NotFound(f"No job {job_id}.")
    return principal.tenant_id


def check_job_id(job_id: str) -> None:
    """Ids we never hand out are not found, without asking the database."""
    if not looks_like("job", job_id):
        raise NotFound("No such job.")
