"""Engine set-up for SQLite (embedded) and PostgreSQL (production), and dialect helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import psycopg
from sqlalchemy import DateTime, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from bulkapi.config import SessionLimits

#: SQLite waits this long for the single writer lock before giving up.
SQLITE_BUSY_TIMEOUT_SECONDS = 60
#: SQLite's page cache per connection, in KiB (an upper bound: pages are kept as read).
SQLITE_CACHE_KIB = 32768
#: WAL pages written before SQLite copies them back into the database file.
SQLITE_CHECKPOINT_PAGES = 10_000
#: Execution option of connections that only read (see ``reading``).
READ_ONLY = "bulkapi_read_only"
#: Keepalive probes sent before a silent peer counts as gone.
KEEPALIVE_PROBES = 3


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs, so operators need not name a driver."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def session_options(limits: SessionLimits) -> list[str]:
    """Server settings for each session (libpq ``options``): the server ends an idle
    transaction, a stuck lock wait and, from its side, a connection to a vanished peer."""
    options: dict[str, object] = {
        name: _ms(seconds)
        for name, seconds in (
            ("idle_in_transaction_session_timeout", limits.idle_in_transaction),
            ("lock_timeout", limits.lock_wait),
            ("statement_timeout", limits.statement),
        )
        if seconds > 0  # 0: whatever the server or role sets applies
    }
    if limits.dead_peer > 0:
        idle, interval = _keepalive_timing(limits.dead_peer)
        options |= {
            "tcp_user_timeout": _ms(limits.dead_peer),
            "tcp_keepalives_idle": idle,
            "tcp_keepalives_interval": interval,
            "tcp_keepalives_count": KEEPALIVE_PROBES,
        }
    # A statement the driver prepares (``prepare=True``, and every executemany) is still
    # planned for its actual arguments each time; only the drain's own transactions,
    # planned as probes whatever the arguments, keep one plan (``probes_only``).
    options["plan_cache_mode"] = "force_custom_plan"
    return [f"-c {name}={value}" for name, value in options.items()]


def _keepalive_timing(dead_peer: float) -> tuple[int, int]:
    """Whole seconds of silence before the first probe, and between probes: half the
    bound, then the probes over the other half (at least a second each)."""
    idle = max(1, round(dead_peer / 2))
    return idle, max(1, round((dead_peer - idle) / KEEPALIVE_PROBES))


#: Runs after which psycopg would prepare a statement on its own: never, in effect.
_NEVER_AUTOMATICALLY = 2**31


def client_connect_args(url: str, limits: SessionLimits) -> dict[str, Any]:
    """libpq arguments: the same dead-peer bound from the client's side, a connect
    timeout, and the server settings, before any ``options`` the URL brings (later
    ``-c`` settings win, so an operator's URL can still override one)."""
    args: dict[str, Any] = {
        # Plan every statement for its actual arguments. psycopg otherwise prepares a
        # statement after five runs, and PostgreSQL may then keep a generic plan made
        # while a table was small (a sequential scan) until the next ANALYZE, which
        # without autovacuum never comes: drains would slow down as tables grow. Only
        # the statements the store asks for (``prepare=True``) are prepared: a threshold of
        # None would refuse those too.
        "prepare_threshold": _NEVER_AUTOMATICALLY,
        "options": " ".join([*session_options(limits), *_url_options(url)]),
    }
    if limits.connect > 0:
        args["connect_timeout"] = max(2, round(limits.connect))  # libpq: whole seconds, >= 2
    if limits.dead_peer > 0:
        idle, interval = _keepalive_timing(limits.dead_peer)
        args |= {
            "keepalives": 1,
            "keepalives_idle": idle,
            "keepalives_interval": interval,
            "keepalives_count": KEEPALIVE_PROBES,
            "tcp_user_timeout": _ms(limits.dead_peer),
        }
    return args


def _url_options(url: str) -> list[str]:
    given = make_url(url).query.get("options", ())
    return [given] if isinstance(given, str) else list(given)


def make_engine(url: str, pool_size: int = 10, limits: SessionLimits | None = None) -> Engine:
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
        connect_args=client_connect_args(url, limits or SessionLimits()),
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
        # A drain batch touches several B-trees at random keys: a page cache of 32 MiB
        # (an upper bound, filled only as pages are read) keeps their inner pages, and a
        # checkpoint every 10,000 pages (about 40 MB of WAL) rather than every 1,000
        # copies each hot page back once per many batches instead of once per batch.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
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


#: Drain batches and effect passes read and write a few hundred rows of tables that grow
#: without bound, joined to arrays and to each other. Left to the planner, such joins
#: were planned now as hash joins over a whole table, now as a scan of a tenant's every
#: key or of every key waiting for a retry (it depends on statistics, which a fresh or
#: fast-growing table lacks, and on the generic plans of prepared statements): tens to
#: hundreds of milliseconds a batch, growing with the tables. For such a transaction
#: only index probes are planned, so each row is found by its key whatever the tables'
#: size or the age of their statistics. Such a plan does not depend on the arguments
#: either, so a statement run after ``probes_only`` with ``prepare=True`` is planned once
#: per connection and kept (a generic plan). A drain batch's two statements, a dozen joins
#: and CTEs each, took about as long to plan as to run on the few dozen operations of a
#: small job's batch.
_PROBES_ONLY = (
    "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"
    " SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
    " SET LOCAL plan_cache_mode = force_generic_plan"
)


def probes_only(cursor: Any) -> None:
    """Plan the rest of the transaction of ``cursor`` (PostgreSQL) as index probes only.

    On a connection in autocommit (``batch_transaction``) this also opens that
    transaction, in the same round trip; otherwise the driver has just sent its own BEGIN.
    """
    driver = cursor.connection
    idle = driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    cursor.execute(f"BEGIN; {_PROBES_ONLY}" if driver.autocommit and idle else _PROBES_ONLY)


@contextmanager
def batch_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection for one transaction whose statements the store sends itself (a drain
    batch): committed when the block ends, rolled back if it raises.

    On PostgreSQL the driver is put in autocommit, so it sends no BEGIN of its own (a
    round trip before the first statement): the store's first statement opens the
    transaction (``probes_only``) and its last write commits. On SQLite, ``engine.begin()``.
    """
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            yield conn
        return
    # The isolation level goes back to the pool's default when the connection does.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        driver = conn.connection.driver_connection
        try:
            yield conn
        except BaseException:
            driver.rollback()  # type: ignore[union-attr]  # ROLLBACK, if still open
            raise
        driver.commit()  # type: ignore[union-attr]  # COMMIT, if the block left it open


class Cte(NamedTuple):
    """A part of a larger PostgreSQL statement: ``text`` (``name AS (...)``, possibly
    after CTEs it reads) and its parameters; ``name`` is the CTE whose rows, once counted,
    have made the whole part run."""

    name: str
    text: str
    params: dict[str, Any]


def single_read(engine: Engine) -> Connection:
    """A connection for a lone read statement: on PostgreSQL in autocommit, one round trip
    instead of three (BEGIN, the read, COMMIT); on SQLite a ``reading`` connection."""
    connection = reading(engine)
    if engine.dialect.name == "postgresql":
        return connection.execution_options(isolation_level="AUTOCOMMIT")
    return connection


def is_postgres(bind: Connection | Engine) -> bool:
    return bind.dialect.name == "postgresql"


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


def sqlite_timestamp(conn: Connection, moment: datetime | None) -> Any:
    """``moment`` as SQLAlchemy itself stores it in SQLite, so reads agree."""
    if moment is None:
        return None
    column_type = DateTime(timezone=True).dialect_impl(conn.dialect)
    process = column_type.bind_processor(conn.dialect)
    return moment if process is None else process(moment)


def driver_cursor(conn: Connection) -> Any:
    """A cursor of the driver's own connection in this transaction: on PostgreSQL arrays
    go as binary (``%b``) and COPY is at hand; on SQLite cached statements run with no
    per-row work in SQLAlchemy."""
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
