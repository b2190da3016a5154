"""The migrations create exactly the schema the code declares, on both databases."""

from __future__ import annotations

import json
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from bulkapi.store.database import make_engine
from bulkapi.store.migrate import upgrade
from bulkapi.store.tables import metadata, operations
from tests.support import fresh_postgres_database


def _differences(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def test_migrated_sqlite_schema_matches_the_declared_tables(tmp_path: Path) -> None:
    assert _differences(f"sqlite:///{tmp_path / 'schema.db'}") == []


def test_migrated_postgres_schema_matches_the_declared_tables() -> None:
    with fresh_postgres_database() as url:
        assert _differences(url) == []


def test_operations_documents_survive_the_move_to_text() -> None:
    """Jobs admitted before the upgrade are applied after it: their documents read back
    as the objects they were."""
    document = {"name": 'ä \\ "quoted"\ttab', "n": [1, 2.5, None], "nested": {"ok": True}}
    with fresh_postgres_database() as url:
        engine = make_engine(url)
        try:
            upgrade(engine, "0008")
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO operations (job_id, idx, tenant_id, type, rid, partition,"
                        " seq, op, data, if_version, status)"
                        " VALUES ('job_1', 0, 't', 'thing', 'a', 0, 1, 'upsert',"
                        " CAST(:data AS jsonb), NULL, 'pending')"
                    ),
                    {"data": json.dumps(document)},
                )
            upgrade(engine)
            with engine.connect() as conn:
                assert conn.execute(select(operations.c.data)).scalar_one() == document
        finally:
            engine.dispose()
