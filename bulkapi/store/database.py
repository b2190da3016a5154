"""Engine set-up for SQLite (embedded) and PostgreSQL (production), and dialect helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.pool import ConnectionPoolEntry

#: SQLite waits this long for the single writer lock before giving up.
SQLITE_BUSY_TIMEOUT_SECONDS = 60
#: Execution option of connections that only read (see ``reading``).
READ_ONLY = "bulkapi_read_only"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs, so operators need not name a driver."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, pool_size: int = 10) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            json_serializer=_dumps,
            json_deserializer=orjson.loads,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping round trip per checkout: a connection found dead fails its
        # statement (503 in the API, a retried drain), and the pool is then refreshed.
        pool_pre_ping=False,
        # Plan every statement for its actual arguments. psycopg otherwise prepares a
        # statement after five runs, and PostgreSQL may then keep a generic plan made
        # while a table was small (a sequential scan) until the next ANALYZE, which
        # without autovacuum never comes: drains would slow down as tables grow.
        connect_args={"prepare_threshold": None},
    )


def _configure_sqlite(engine: Engine) -> None:
    """WAL for concurrent readers; BEGIN IMMEDIATE so writers queue instead of deadlocking.

    pysqlite's own transaction handling starts transactions lazily as DEFERRED, which lets
    two connections both read and then both fail to upgrade to writers.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def reading(engine: Engine) -> Connection:
    """A connection for reads only. On SQLite its transactions begin DEFERRED, which WAL
    runs beside the single writer: a status read, long poll, event stream, health check
    or scrape never queues behind a drain batch for the write lock. Writing through it
    would fail on SQLite (a deferred reader cannot always upgrade); use ``engine.begin()``.
    """
    return engine.connect().execution_options(**{READ_ONLY: True})


def is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def dialect_insert(connection: Connection, table: Table) -> Any:
    """An INSERT that supports ON CONFLICT on both supported databases."""
    if is_postgres(connection):
        return postgresql.insert(table)
    return sqlite.insert(table)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
