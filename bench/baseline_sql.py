"""The table and upsert every hand-written baseline uses: what a user would write instead.

The shape is bulkapi's ``resources`` table reduced to what a plain CRUD service keeps: a
row per (tenant, type, id) with a version and a jsonb document. The upsert bumps the
version of an existing row and returns it, so a baseline can answer with an ETag.
"""

from __future__ import annotations

#: The sync PUT baseline's table (bench/crud.py).
CRUD_TABLE = "bench_crud"


def table_ddl(table: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for one baseline table (PostgreSQL)."""
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    tenant_id varchar(40) NOT NULL, type varchar(64) NOT NULL, rid varchar(128) NOT NULL,
    version integer NOT NULL, data jsonb,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, type, rid))
"""


def upsert_sql(table: str) -> str:
    """Insert or bump the version; parameters (tenant, type, id, data); returns the version.

    ``clock_timestamp()`` rather than ``now()``: the naive baseline reads the last
    ``updated_at`` as the moment its last write was applied.
    """
    return f"""
INSERT INTO {table} AS r (tenant_id, type, rid, version, data, created_at, updated_at)
VALUES (%s, %s, %s, 1, %s, clock_timestamp(), clock_timestamp())
ON CONFLICT (tenant_id, type, rid) DO UPDATE
SET version = r.version + 1, data = EXCLUDED.data, updated_at = clock_timestamp()
RETURNING version
"""
