"""Set-based SQL for admission, one implementation per database.

Admission moves hundreds to thousands of rows per transaction. Statements
with one bound value per row and column cost more to compile than to run, so PostgreSQL
gets one statement for the job's own rows, then one over all keys (sent as two strings)
and ``COPY``, or for a small job one over its keys and operations together (sent as a
few strings), and SQLite, whose writer lock is already exclusive, gets cached
single-row statements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import orjson
from sqlalchemy.engine import Connection

from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpStatus
from bulkapi.store.database import driver_cursor, is_postgres, sqlite_timestamp
from bulkapi.store.jobs import OPEN_STATUS_LIST, open_operations_bound
from bulkapi.store.tables import job_counts, job_status_history, jobs, status_tokens


@dataclass(frozen=True, slots=True)
class JobRows:
    """A new job's own rows: the job (``jobs`` columns, ``status`` queued), its first
    status, its status token and its per-partition counters."""

    job: dict[str, Any]
    token_hash: str
    #: (partition, operations of the job in it), one per partition the job touches.
    counts: Sequence[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class JobOperations:
    """A job's operations as admission writes them: each with its partition (columns
    side by side, no object per row); their keys' sequence numbers come apart."""

    job_id: str
    tenant_id: str
    operations: Sequence[Operation]
    partitions: Sequence[int]

    def rows(self, sequences: Sequence[int]) -> Iterator[tuple[Any, ...]]:
        """The ``operations`` rows, in ``_OPERATION_COLUMNS`` order, with each
        operation's sequence number from ``sequences`` (in the operations' order)."""
        job_id, tenant_id = self.job_id, self.tenant_id
        pending = OpStatus.PENDING.value
        for index, (op, partition, seq) in enumerate(
            zip(self.operations, self.partitions, sequences, strict=True)
        ):
            key = op.key
            yield (
                job_id,
                index,
                tenant_id,
                key.type,
                key.id,
                partition,
                seq,
                op.kind.value,
                _document(op),
                op.if_version,
                pending,
            )


def _document(op: Operation) -> str | None:
    return None if op.data is None else orjson.dumps(op.data).decode()


T = TypeVar("T")
#: A statement's result, to be had once it is needed (sent already, maybe not answered).
Later = Callable[[], T]


class BulkSql(Protocol):
    def overlapping(self, conn: Connection) -> AbstractContextManager[None]:
        """Statements sent inside run on the server while the caller goes on, until it
        asks for their results: PostgreSQL's pipeline mode (no ``COPY`` inside). SQLite
        runs in-process: its statements run as they are sent."""

    def insert_job(self, conn: Connection, rows: JobRows, *, room: int) -> Later[bool]:
        """Write the job's own rows, the ``jobs`` row first: a concurrent request with
        the same Idempotency-Key waits on its unique index, then fails with a unique
        violation before anything else is written.

        The result says whether the tenant's other open jobs' totals
        (``store/jobs.py:open_operations_bound``) came to at most ``room``, read in the
        same statement: a cheap bound of their pending work.
        """

    def allocate_sequences(
        self, conn: Connection, tenant_id: str, keys: Sequence[ResourceKey], now: datetime
    ) -> Later[list[int]]:
        """Hand each key its next sequence number (in the order of ``keys``), creating
        placeholder rows for new keys.

        On PostgreSQL keys are locked in one global (sorted) order, so admissions over
        overlapping keys wait for each other instead of deadlocking; SQLite's one writer
        lock serializes them anyway. The lock is held until commit, which is what makes
        sequence order equal commit order for each key.
        """

    def insert_operations(
        self, conn: Connection, job: JobOperations, sequences: Sequence[int]
    ) -> None:
        """Write the operations, numbered by ``allocate_sequences`` already."""

    def admit_operations(self, conn: Connection, job: JobOperations, now: datetime) -> None:
        """``allocate_sequences`` and ``insert_operations`` at once, for operations
        checked already: on PostgreSQL one statement, so the keys' rows stay locked for
        that statement and the commit, not for a round trip and a ``COPY`` more."""


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


_JOB_COLUMNS = tuple(column.name for column in jobs.columns)


class PostgresBulkSql:
    # One statement for the job, its status, its token and its counters, instead of a
    # round trip each (the counters, about 50 rows for 100 operations over hot keys, as a
    # pipelined executemany): over small requests the round trips cost more than the rows.
    # The pending cap's cheap bound (the other open jobs' totals: every part of one
    # statement reads the same snapshot, without the job it inserts) rides along.
    _JOB = f"""
        WITH job AS (
            INSERT INTO jobs ({", ".join(_JOB_COLUMNS)})
            VALUES ({", ".join(f"%({name})s" for name in _JOB_COLUMNS)})
            RETURNING id, status, created_at
        ),
        status AS (
            INSERT INTO job_status_history (job_id, status, at)
            SELECT id, status, created_at FROM job
        ),
        token AS (
            INSERT INTO status_tokens (token_hash, job_id) SELECT %(token_hash)s, id FROM job
        ),
        counts AS (
            INSERT INTO job_counts (job_id, partition, succeeded, failed, cancelled, pending)
            SELECT job.id, c.partition, 0, 0, 0, c.pending
            FROM job, unnest(%(partitions)s::integer[], %(pendings)s::integer[])
              AS c(partition, pending)
        )
        SELECT coalesce(sum(total), 0) <= %(room)s FROM jobs
        WHERE tenant_id = %(tenant)s AND status IN ({OPEN_STATUS_LIST})
    """
    # Types and ids never hold a space (both are checked against patterns without one),
    # so each list goes as one space-joined string, split by the server: a 100k-key
    # admission then builds no Python object per key on the way out (a binary array of
    # strings is built element by element, a transient 30 MB at 100k keys).
    _KEYS = "string_to_array(%(types)s, ' '), string_to_array(%(rids)s, ' ')"
    # Keys are locked in one global (sorted) order; a key new to the table gets sequence
    # number 1.
    _NUMBER = """
        INSERT INTO resources
            (tenant_id, type, rid, version, admitted_seq, pending, created_at, updated_at)
        SELECT %(tenant)s, k.type, k.rid, 0, 1, 1, %(now)s, %(now)s FROM {keys}
        ORDER BY k.type, k.rid
        ON CONFLICT (tenant_id, type, rid)
        DO UPDATE SET admitted_seq = resources.admitted_seq + 1,
                      pending = resources.pending + 1
        RETURNING type, rid, admitted_seq
    """
    # Only the keys already known come back, with their numbers: for a job of fresh keys
    # nothing does, and the server neither matches the returned rows to the keys nor
    # sorts them back into the keys' order (together about a third of the statement's
    # time at 1,000 keys).
    _ALLOCATE = f"""
        WITH allocated AS ({_NUMBER.format(keys=f"unnest({_KEYS}) AS k(type, rid)")})
        SELECT type, rid, admitted_seq FROM allocated WHERE admitted_seq <> 1
    """
    # The operations' other columns go the same way: numbers and kinds space-joined (an
    # empty element is NULL), documents joined by a record separator, a control character
    # that JSON text never holds unescaped. ``unnest`` pads a shorter array with NULLs,
    # so one operation without a document or a precondition gets NULL there too.
    # Inserted in request order, so their ids keep it.
    _ADMIT = f"""
        WITH k AS MATERIALIZED (
            SELECT * FROM unnest({_KEYS}, string_to_array(%(partitions)s, ' ')::smallint[],
                                 string_to_array(%(kinds)s, ' '),
                                 string_to_array(%(documents)s, %(separator)s, ''),
                                 string_to_array(%(if_versions)s, ' ', '')::integer[])
              WITH ORDINALITY AS k(type, rid, partition, op, data, if_version, idx)
        ),
        allocated AS ({_NUMBER.format(keys="k")})
        INSERT INTO operations ({", ".join(_OPERATION_COLUMNS)})
        SELECT %(job)s, k.idx - 1, %(tenant)s, k.type, k.rid, k.partition, a.admitted_seq,
               k.op, k.data, k.if_version, %(pending)s
        FROM k JOIN allocated AS a ON a.type = k.type AND a.rid = k.rid
        ORDER BY k.idx
    """
    _COPY = f"COPY operations ({', '.join(_OPERATION_COLUMNS)}) FROM STDIN"

    def overlapping(self, conn: Connection) -> AbstractContextManager[None]:
        return conn.connection.driver_connection.pipeline()  # type: ignore[union-attr,no-any-return]

    def insert_job(self, conn: Connection, rows: JobRows, *, room: int) -> Later[bool]:
        values = dict.fromkeys(_JOB_COLUMNS) | rows.job
        meta = values["meta"]
        cursor = driver_cursor(conn)
        cursor.execute(
            self._JOB,
            values
            | {
                "meta": None if meta is None else orjson.dumps(meta).decode(),
                "token_hash": rows.token_hash,
                "partitions": [partition for partition, _ in rows.counts],
                "pendings": [pending for _, pending in rows.counts],
                "room": room,
                "tenant": values["tenant_id"],
            },
        )
        return lambda: bool(cursor.fetchone()[0])

    def allocate_sequences(
        self, conn: Connection, tenant_id: str, keys: Sequence[ResourceKey], now: datetime
    ) -> Later[list[int]]:
        cursor = driver_cursor(conn)
        cursor.execute(self._ALLOCATE, _key_strings(tenant_id, keys, now))

        def sequences() -> list[int]:
            known = {(rtype, rid): seq for rtype, rid, seq in cursor.fetchall()}
            if not known:
                return [1] * len(keys)
            return [known.get((k.type, k.id), 1) for k in keys]

        return sequences

    def insert_operations(
        self, conn: Connection, job: JobOperations, sequences: Sequence[int]
    ) -> None:
        with driver_cursor(conn).copy(self._COPY) as copy:
            for row in job.rows(sequences):
                copy.write_row(row)

    def admit_operations(self, conn: Connection, job: JobOperations, now: datetime) -> None:
        operations = job.operations
        keys = [op.key for op in operations]
        documents = [_document(op) for op in operations]
        driver_cursor(conn).execute(
            self._ADMIT,
            _key_strings(job.tenant_id, keys, now)
            | {
                "job": job.job_id,
                "pending": OpStatus.PENDING.value,
                "partitions": " ".join(map(str, job.partitions)),
                "kinds": " ".join([op.kind.value for op in operations]),
                "documents": _RECORD_SEPARATOR.join(["" if d is None else d for d in documents]),
                "separator": _RECORD_SEPARATOR,
                "if_versions": " ".join(
                    ["" if op.if_version is None else str(op.if_version) for op in operations]
                ),
            },
        )


#: Between documents sent as one string: JSON text escapes every control character.
_RECORD_SEPARATOR = "\x1e"


def _key_strings(tenant_id: str, keys: Sequence[ResourceKey], now: datetime) -> dict[str, Any]:
    return {
        "tenant": tenant_id,
        "now": now,
        "types": " ".join([k.type for k in keys]),
        "rids": " ".join([k.id for k in keys]),
    }


class SqliteBulkSql:
    """One cached statement per row on the raw sqlite3 cursor: SQLite runs in-process,
    so a point statement costs microseconds, and the writer lock is already exclusive."""

    _ALLOCATE = (
        "INSERT INTO resources (tenant_id, type, rid, version, admitted_seq, pending,"
        " created_at, updated_at) VALUES (?, ?, ?, 0, 1, 1, ?, ?)"
        " ON CONFLICT (tenant_id, type, rid) DO UPDATE SET admitted_seq = admitted_seq + 1,"
        " pending = pending + 1"
        " RETURNING admitted_seq"
    )
    _INSERT = (
        f"INSERT INTO operations ({', '.join(_OPERATION_COLUMNS)})"
        f" VALUES ({', '.join('?' for _ in _OPERATION_COLUMNS)})"
    )

    def overlapping(self, conn: Connection) -> AbstractContextManager[None]:
        return nullcontext()

    def insert_job(self, conn: Connection, rows: JobRows, *, room: int) -> Later[bool]:
        fits = open_operations_bound(conn, rows.job["tenant_id"]) <= room
        job_id = rows.job["id"]
        conn.execute(jobs.insert().values(**rows.job))
        conn.execute(
            job_status_history.insert().values(
                job_id=job_id, status=rows.job["status"], at=rows.job["created_at"]
            )
        )
        conn.execute(status_tokens.insert().values(token_hash=rows.token_hash, job_id=job_id))
        conn.execute(
            job_counts.insert(),
            [
                {
                    "job_id": job_id,
                    "partition": partition,
                    "succeeded": 0,
                    "failed": 0,
                    "cancelled": 0,
                    "pending": pending,
                }
                for partition, pending in rows.counts
            ],
        )
        return lambda: fits

    def allocate_sequences(
        self, conn: Connection, tenant_id: str, keys: Sequence[ResourceKey], now: datetime
    ) -> Later[list[int]]:
        # In the keys' own order: the transaction already holds SQLite's one writer lock,
        # so there is no row lock order to keep.
        cursor = driver_cursor(conn)
        stamp = sqlite_timestamp(conn, now)
        allocate = self._ALLOCATE
        sequences = [
            cursor.execute(allocate, (tenant_id, key.type, key.id, stamp, stamp)).fetchone()[0]
            for key in keys
        ]
        return lambda: sequences

    def insert_operations(
        self, conn: Connection, job: JobOperations, sequences: Sequence[int]
    ) -> None:
        driver_cursor(conn).executemany(self._INSERT, job.rows(sequences))

    def admit_operations(self, conn: Connection, job: JobOperations, now: datetime) -> None:
        keys = [op.key for op in job.operations]
        self.insert_operations(conn, job, self.allocate_sequences(conn, job.tenant_id, keys, now)())


_POSTGRES = PostgresBulkSql()
_SQLITE = SqliteBulkSql()


def bulk_sql_for(conn: Connection) -> BulkSql:
    return _POSTGRES if is_postgres(conn) else _SQLITE
