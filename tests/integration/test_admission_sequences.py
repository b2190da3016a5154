"""Admission in the store, on both databases: each operation's per-key sequence number
(the next one of its key, whether the key is new, known from earlier jobs, or created by
a sync write), operations stored exactly as given, and a connection left usable by an
admission that fails midway."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import replace

import psycopg
import pytest
from psycopg import pq
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError

from bulkapi.config import Settings
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpKind
from bulkapi.store.admission import Admission, NewJob, admitting
from bulkapi.store.database import is_postgres, utcnow
from bulkapi.store.resources import lock_for_write
from bulkapi.store.tables import operations
from tests.support import admit_upserts, upserts_job


def _sequences(engine: Engine, tenant: str) -> list[tuple[str, int]]:
    """Each admitted operation's (key id, sequence number), in admission order."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(operations.c.rid, operations.c.seq)
            .where(operations.c.tenant_id == tenant)
            .order_by(operations.c.id)
        )
        return [(row.rid, row.seq) for row in rows]


def test_each_operation_gets_its_keys_next_sequence_number(engine: Engine) -> None:
    admit_upserts(engine, "t1", ["a", "b"])
    # Keys in another order, one known twice already, one new between known ones.
    admit_upserts(engine, "t1", ["b", "new", "a"])
    admit_upserts(engine, "t1", ["a"])
    admit_upserts(engine, "t2", ["a"])  # another tenant's key of the same id

    assert _sequences(engine, "t1") == [
        ("a", 1),
        ("b", 1),
        ("b", 2),
        ("new", 1),
        ("a", 2),
        ("a", 3),
    ]
    assert _sequences(engine, "t2") == [("a", 1)]


def test_a_key_a_sync_write_created_starts_at_one(engine: Engine) -> None:
    with engine.begin() as conn:  # the placeholder a sync write locks (no bulk work yet)
        assert lock_for_write(conn, "t1", ResourceKey("thing", "s"), utcnow(), create=True)
    admit_upserts(engine, "t1", ["s", "fresh"])
    admit_upserts(engine, "t1", ["fresh", "s"])

    assert _sequences(engine, "t1") == [("s", 1), ("fresh", 1), ("fresh", 2), ("s", 2)]


#: Both ways in: the keys numbered ahead while the operations are checked (then
#: ``COPY``), or numbered with operations checked already (one statement).
BOTH_WAYS = pytest.mark.parametrize("overlap", [True, False], ids=["keys-ahead", "one-statement"])


def _admit(
    conn: Connection, job: NewJob, operations: list[Operation], *, overlap: bool = True
) -> None:
    with conn.begin(), _admitting(conn, job, overlap=overlap) as admission:
        admission.write(operations)


def _admitting(
    conn: Connection, job: NewJob, *, overlap: bool = True
) -> AbstractContextManager[Admission]:
    return admitting(
        conn, job, utcnow(), pending_cap=Settings.max_pending_operations, overlap=overlap
    )


@BOTH_WAYS
def test_an_admission_that_fails_midway_leaves_its_connection_as_it_found_it(
    engine: Engine, overlap: bool
) -> None:
    # A job needs a tenant: the database refuses the job's row, while the many keys'
    # statement is still being built (on PostgreSQL it learns so while sending that).
    many, operations_of_many = upserts_job("t0", [f"k{i}" for i in range(100_000)])
    refused = replace(many, tenant_id=None), operations_of_many
    job, operations = upserts_job("t1", ["a", "b"])
    with engine.connect() as conn:
        with pytest.raises((DBAPIError, psycopg.Error)):
            _admit(conn, *refused, overlap=overlap)
        # The caller's own check fails while the job's rows are on their way.
        with (
            pytest.raises(ValueError),
            conn.begin(),
            _admitting(conn, job, overlap=overlap),
        ):
            raise ValueError("an operation is not valid")
        if is_postgres(conn):
            pipeline = conn.connection.driver_connection.pgconn.pipeline_status  # type: ignore[union-attr]
            assert pipeline == pq.PipelineStatus.OFF
        _admit(conn, job, operations, overlap=overlap)  # the same connection goes on

    assert _sequences(engine, "t1") == [("a", 1), ("b", 1)]


#: Documents whose text holds what the operations' bulk load must escape or keep as is.
_AWKWARD_DOCUMENTS = [
    {"path": "C:\\dir\\file", "escapes": "\\n is not a line break", "tab": "a\tb"},
    {"lines": "one\ntwo\r\nthree", "nul-ish": "\\N", "quote": '"q"', "u": "\u00e9\u2603\U0001f600"},
    {"nested": [{"deep": ["\\", "\\\\", "\t\n"]}], "n": -1.5e300, "none": None, "t": True},
    {},
]


@BOTH_WAYS
def test_operations_are_stored_exactly_as_given(engine: Engine, overlap: bool) -> None:
    # The last keys do not match the API's patterns: the store's bulk load must not rely
    # on those patterns to keep its rows apart.
    keys = [f"doc-{i}" for i in range(len(_AWKWARD_DOCUMENTS))] + ["odd:id.v-1_", "a\tb\\c\nd\r"]
    job, upserts = upserts_job("t1", keys)
    given = [
        Operation(OpKind.UPSERT, upserts[i].key, document)
        for i, document in enumerate(_AWKWARD_DOCUMENTS)
    ] + [
        Operation(OpKind.PATCH, upserts[-2].key, {"x": "\\"}, if_version=3),
        Operation(OpKind.DELETE, upserts[-1].key),
    ]
    with engine.connect() as conn:
        _admit(conn, job, given, overlap=overlap)

    assert _stored(engine, "t1") == given


def _stored(engine: Engine, tenant: str) -> list[Operation]:
    """The tenant's operations as stored, in request order, after checking that their
    indexes are the request's positions and that each is pending."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                operations.c.idx,
                operations.c.type,
                operations.c.rid,
                operations.c.op,
                operations.c.data,
                operations.c.if_version,
                operations.c.status,
            )
            .where(operations.c.tenant_id == tenant)
            .order_by(operations.c.id)
        ).all()
    assert [row.idx for row in rows] == list(range(len(rows)))
    assert {row.status for row in rows} == {"pending"}
    return [
        Operation(OpKind(row.op), ResourceKey(row.type, row.rid), row.data, row.if_version)
        for row in rows
    ]


@BOTH_WAYS
@pytest.mark.parametrize(
    "operation",
    [
        Operation(OpKind.DELETE, ResourceKey("thing", "gone")),
        Operation(OpKind.UPSERT, ResourceKey("thing", "kept"), {"a": 1}, if_version=7),
    ],
    ids=["without-document-or-precondition", "with-both"],
)
def test_a_job_of_one_operation_is_stored_as_given(
    engine: Engine, overlap: bool, operation: Operation
) -> None:
    job, _ = upserts_job("t1", [operation.key.id])
    with engine.connect() as conn:
        _admit(conn, job, [operation], overlap=overlap)

    assert _stored(engine, "t1") == [operation]
