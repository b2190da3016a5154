"""The migrations create exactly the schema the code declares, on both databases."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bulkapi.store.database import make_engine
from bulkapi.store.migrate import upgrade
from bulkapi.store.tables import metadata
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
