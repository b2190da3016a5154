"""Fixtures of the fleet tier: a fresh database and a broker namespace per test."""

from __future__ import annotations

from tests.integration.conftest import postgres_url, redis_namespace

__all__ = ["postgres_url", "redis_namespace"]
