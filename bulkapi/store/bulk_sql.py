"""Set-based SQL for the two hot paths, one implementation per database.

Admission and draining move hundreds to thousands of rows per transaction. Statements
with one bound value per row and column cost more to compile than to run, so PostgreSQL
gets arrays (``unnest``) and ``COPY``, and SQLite, whose writer lock is already
exclusive, gets cached single-row statements run with ``executemany``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy.engine import Connection

from bulkapi.core.apply import ResourceState
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpStatus
from bulkapi.store.database import is_postgres
from bulkapi.store.tables import resources

#: Keys per SELECT when SQLite reads back the sequences it handed out.
SQLITE_READ_CHUNK = 300


#: (tenant_id, type, rid): how the drain names a resource row.
StateKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class OperationRow:
    job_id: str
    index: int
    tenant_id: str
    operation: Operation
    partition: int
    seq: int


@dataclass(frozen=True, slots=True)
class ResourceWrite:
    tenant_id: str
    type: str
    rid: str
    version: int
    data: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class OperationOutcome:
    id: int
    status: OpStatus
    version: int | None
    error_code: str | None
    error_message: str | None


class BulkSql(Protocol):
    def allocate_sequences(
        self, conn: Connection, tenant_id: str, keys: Sequence[ResourceKey], now: datetime
    ) -> dict[ResourceKey, int]:
        """Hand each key its next sequence number, creating placeholder rows for new keys.

        Keys are locked in one global (sorted) order, so admissions over overlapping keys
        wait for each other instead of deadlocking. The row lock is held until commit,
        which is what makes sequence order equal commit order for each key.
        """

    def insert_operations(self, conn: Connection, rows: Sequence[OperationRow]) -> None: ...

    def lock_resources(
        self, conn: Connection, keys: Sequence[StateKey]
    ) -> dict[StateKey, ResourceState]:
        """Lock the keys' rows in sorted order (as admissions do) and read their state."""

    def write_resources(
        self, conn: Connection, writes: Sequence[ResourceWrite], now: datetime
    ) -> None: ...

    def finish_operations(
        self, conn: Connection, outcomes: Sequence[OperationOutcome], now: datetime
    ) -> None: ...


_OPERATION_COLUMNS = (
    "job_id",
    "idx",
    "tenant_id",
    "type",
    "rid",
    "partition",
    "seq",
    "op",
    "data",
    "if_version",
    "status",
)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _driver_cursor(conn: Connection) -> Any:
    """The psycopg cursor of this transaction: arrays sent as binary (%b), no quoting."""
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


class PostgresBulkSql:
    _ALLOCATE = """
        WITH allocated AS (
            INSERT INTO resources
                (tenant_id, type, rid, version, admitted_seq, created_at, updated_at)
            SELECT %(tenant)s, k.type, k.rid, 0, 1, %(now)s, %(now)s
            FROM unnest(%(types)b::varchar[], %(rids)b::varchar[]) AS k(type, rid)
            ORDER BY k.type, k.rid
            ON CONFLICT (tenant_id, type, rid)
            DO UPDATE SET admitted_seq = resources.admitted_seq + 1
            RETURNING type, rid, admitted_seq
        )
        SELECT array_agg(type), array_agg(rid), array_agg(admitted_seq) FROM allocated
    """
    _LOCK = """
        SELECT r.tenant_id, r.type, r.rid, r.version, r.data
        FROM resources AS r
        JOIN unnest(%(tenants)b::varchar[], %(types)b::varchar[], %(rids)b::varchar[])
          AS k(tenant_id, type, rid)
          ON r.tenant_id = k.tenant_id AND r.type = k.type AND r.rid = k.rid
        ORDER BY r.tenant_id, r.type, r.rid
        FOR UPDATE OF r
    """
    _WRITE = """
        UPDATE resources AS r
        SET version = w.version, data = w.data, updated_at = %(now)s
        FROM unnest(%(tenants)b::varchar[], %(types)b::varchar[], %(rids)b::varchar[],
                    %(versions)b::integer[], %(datas)b::text[]::jsonb[])
          AS w(tenant_id, type, rid, version, data)
        WHERE r.tenant_id = w.tenant_id AND r.type = w.type AND r.rid = w.rid
    """
    _FINISH = """
        UPDATE operations AS o
        SET status = f.status, version = f.version, error_code = f.error_code,
            error_message = f.error_message, finished_at = %(now)s
        FROM unnest(%(ids)b::bigint[], %(statuses)b::varchar[], %(versions)b::integer[],
                    %(codes)b::varchar[], %(messages)b::text[])
          AS f(id, status, version, error_code, error_message)
        WHERE o.id = f.id
    """
    _COPY = f"COPY operations ({', '.join(_OPERATION_COLUMNS)}) FROM STDIN"

    def allocate_sequences(
        self, conn: Connection, tenant_id: str, keys: Sequence[ResourceKey], now: datetime
    ) -> dict[ResourceKey, int]:
        cursor = _driver_cursor(conn)
        cursor.execute(
            self._ALLOCATE,
            {
                "tenant": tenant_id,
                "now": now,
                "types": [k.type for k in keys],
                "rids": [k.id for k in keys],
            },
        )
        # One row of three arrays: far cheaper to fetch than a row per key.
        types, rids, seqs = cursor.fetchone()
        # Plain (type, id) tuples hash and compare equal to ResourceKeys, built at C speed.
        return dict(zip(zip(types, rids, strict=True), seqs, strict=True))  # type: ignore[arg-type]

    def insert_operations(self, conn: Connection, rows: Sequence[OperationRow]) -> None:
        pending = OpStatus.PENDING.value
        with _driver_cursor(conn).copy(self._COPY) as copy:
            for row in rows:
                op = row.operation
                copy.write_row(
                    (
                        row.job_id,
                        row.index,
                        row.tenant_id,
                        op.key.type,
                        op.key.id,
                        row.partition,
                        row.seq,
                        op.kind.value,
                        _json(op.data),
                        op.if_version,
                        pending,
                    )
                )

    def lock_resources(
        self, conn: Connection, keys: Sequence[StateKey]
    ) -> dict[StateKey, ResourceState]:
        cursor = _driver_cursor(conn)
        cursor.execute(
            self._LOCK,
            {
                "tenants": [k[0] for k in keys],
                "types": [k[1] for k in keys],
                "rids": [k[2] for k in keys],
            },
        )
        return {
            (tenant, rtype, rid): ResourceState(version, data)
            for tenant, rtype, rid, version, data in cursor.fetchall()
        }

    def write_resources(
        self, conn: Connection, writes: Sequence[ResourceWrite], now: datetime
    ) -> None:
        _driver_cursor(conn).execute(
            self._WRITE,
            {
                "now": now,
                "tenants": [w.tenant_id for w in writes],
                "types": [w.type for w in writes],
                "rids": [w.rid for w in writes],
                "versions": [w.version for w in writes],
                "datas": [_json(w.data) for w in writes],
            },
        )

    def finish_operations(
        self, conn: Connection, outcomes: Sequence[OperationOutcome], now: datetime
    ) -> None:
        _driver_cursor(conn).execute(
            self._FINISH,
            {
                "now": now,
                "ids": [o.id for o in outcomes],
                "statuses": [o.status.value for o in outcomes],
                "versions": [o.version for o in outcomes],
                "codes": [o.error_code for o in outcomes],
                "messages": [o.error_message for o in outcomes],
            },
        )


class SqliteBulkSql:
    """One cached statement per row on the raw sqlite3 cursor: SQLite runs in-process,
    so a point statement costs microseconds, and the writer lock is already exclusive."""

    _ALLOCATE = (
        "INSERT INTO resources (tenant_id, type, rid, version, admitted_seq, created_at,"
        " updated_at) VALUES (?, ?, ?, 0, 1, ?, ?)"
        " ON CONFLICT (tenant_id, type, rid) DO UPDATE SET admitted_seq = admitted_seq + 1"
        " RETURNING admitted_seq"
    )
    _INSERT = (
        f"INSERT INTO operations ({', '.join(_OPERATION_COLUMNS)})"
        f" VALUES ({', '.join('?' for _ in _OPERATION_COLUMNS)})"
    )
    _STATE = "SELECT version, data FROM resources WHERE tenant_id = ? AND type = ? AND rid = ?"
    _WRITE = (
        "UPDATE resources SET version = ?, data = ?, updated_at = ?"
        " WHERE tenant_id = ? AND type = ? AND rid = ?"
    )
    _FINISH = (
        "UPDATE operations SET status = ?, version = ?, error_code = ?, error_message = ?,"
        " finished_at = ? WHERE id = ?"
    )

    @staticmethod
    def _timestamp(conn: Connection, moment: datetime) -> Any:
        """``moment`` as SQLAlchemy itself stores it in SQLite, so reads agree."""
        process = resources.c.updated_at.type.bind_processor(conn.dialect)
        return moment if process is None else process(moment)

    def allocate_sequences(
        self, conn: Connection, tenant_id: str, keys: Sequence[ResourceKey], now: datetime
    ) -> dict[ResourceKey, int]:
        cursor = _driver_cursor(conn)
        stamp = self._timestamp(conn, now)
        allocated: dict[ResourceKey, int] = {}
        for key in sorted(keys):
            cursor.execute(self._ALLOCATE, (tenant_id, key.type, key.id, stamp, stamp))
            allocated[key] = cursor.fetchone()[0]
        return allocated

    def insert_operations(self, conn: Connection, rows: Sequence[OperationRow]) -> None:
        pending = OpStatus.PENDING.value
        _driver_cursor(conn).executemany(
            self._INSERT,
            [
                (
                    row.job_id,
                    row.index,
                    row.tenant_id,
                    row.operation.key.type,
                    row.operation.key.id,
                    row.partition,
                    row.seq,
                    row.operation.kind.value,
                    _json(row.operation.data),
                    row.operation.if_version,
                    pending,
                )
                for row in rows
            ],
        )

    def lock_resources(
        self, conn: Connection, keys: Sequence[StateKey]
    ) -> dict[StateKey, ResourceState]:
        cursor = _driver_cursor(conn)
        states: dict[StateKey, ResourceState] = {}
        for key in keys:
            cursor.execute(self._STATE, key)
            found = cursor.fetchone()
            if found is not None:
                version, data = found
                states[key] = ResourceState(version, None if data is None else orjson.loads(data))
        return states

    def write_resources(
        self, conn: Connection, writes: Sequence[ResourceWrite], now: datetime
    ) -> None:
        stamp = self._timestamp(conn, now)
        _driver_cursor(conn).executemany(
            self._WRITE,
            [(w.version, _json(w.data), stamp, w.tenant_id, w.type, w.rid) for w in writes],
        )

    def finish_operations(
        self, conn: Connection, outcomes: Sequence[OperationOutcome], now: datetime
    ) -> None:
        stamp = self._timestamp(conn, now)
        _driver_cursor(conn).executemany(
            self._FINISH,
            [
                (o.status.value, o.version, o.error_code, o.error_message, stamp, o.id)
                for o in outcomes
            ],
        )


_POSTGRES = PostgresBulkSql()
_SQLITE = SqliteBulkSql()


def bulk_sql_for(conn: Connection) -> BulkSql:
    return _POSTGRES if is_postgres(conn) else _SQLITE
