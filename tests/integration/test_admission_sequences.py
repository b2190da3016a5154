"""Each admitted operation's per-key sequence number, on both databases: the next one of
its key, whether the key is new, known from earlier jobs, or created by a sync write."""

from __future__ import annotations

from sqlalchemy import Engine, select

from bulkapi.core.keys import ResourceKey
from bulkapi.store.database import utcnow
from bulkapi.store.resources import lock_for_write
from bulkapi.store.tables import operations
from tests.support import admit_upserts


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
