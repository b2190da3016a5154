"""Draining several partitions together, and going on while any of them may hold more.

A small job's wake-up names a block of partitions; their operations share each batch.
A drain stops for a partition only once nothing it may still hold is left behind: a
tenant's share that came back full means more may wait, whatever the batch's size.
"""

from __future__ import annotations

from sqlalchemy import Engine, func, select, text

from bulkapi.applier import Applier
from bulkapi.core.keys import ResourceKey, partition_of
from bulkapi.core.operations import OpStatus
from bulkapi.core.plan import RetryPolicy
from bulkapi.dispatch.drainer import DrainHooks, DrainState, PartitionDrainer
from bulkapi.registry import TypeRegistry
from bulkapi.store.database import make_engine
from bulkapi.store.drain import PARTITION_LOCK_SPACE
from bulkapi.store.migrate import upgrade
from bulkapi.store.tables import operations
from tests.support import STORE_PARTITIONS, admit_upserts

BLOCK = list(range(8, 16))


def _ids_in(tenant: str, partitions: set[int], count: int, prefix: str = "k") -> list[str]:
    """``count`` ids of the tenant's ``thing`` keys that fall in ``partitions``."""
    found: list[str] = []
    candidate = 0
    while len(found) < count:
        rid = f"{prefix}{candidate}"
        if partition_of(tenant, ResourceKey("thing", rid), STORE_PARTITIONS) in partitions:
            found.append(rid)
        candidate += 1
    return found


def _drainer(engine: Engine, batch_size: int) -> PartitionDrainer:
    return PartitionDrainer(engine, batch_size, 60.0, Applier(TypeRegistry([])), RetryPolicy(), 10)


def _pending(engine: Engine, partitions: list[int]) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).where(
                operations.c.status == OpStatus.PENDING.value,
                operations.c.partition.in_(partitions),
            )
        ).scalar_one()


def test_a_block_of_partitions_drains_in_one_shared_batch(engine: Engine) -> None:
    ids = _ids_in("t1", set(BLOCK), 24)
    admit_upserts(engine, "t1", ids)
    touched = sorted(
        {partition_of("t1", ResourceKey("thing", rid), STORE_PARTITIONS) for rid in ids}
    )
    assert len(touched) > 1

    states = _drainer(engine, 500).drain(BLOCK, DrainHooks())

    assert states == dict.fromkeys(BLOCK, DrainState.EMPTY)
    assert _pending(engine, BLOCK) == 0
    with engine.connect() as conn:
        finished = conn.execute(
            select(operations.c.partition, operations.c.finished_at).where(
                operations.c.partition.in_(BLOCK)
            )
        ).all()
    assert sorted({row.partition for row in finished}) == touched
    assert len({row.finished_at for row in finished}) == 1  # one batch, one commit


def test_a_drain_goes_on_while_a_tenants_share_came_back_full(engine: Engine) -> None:
    """Two tenants wait in one partition, one with far more than the other: each batch
    gives each half of it, so the small tenant's few leave the batch short of full while
    the big tenant's share was full. The drain must not stop there."""
    partition = BLOCK[0]
    admit_upserts(engine, "heavy", _ids_in("heavy", {partition}, 30))
    admit_upserts(engine, "light", _ids_in("light", {partition}, 2))

    states = _drainer(engine, 10).drain([partition], DrainHooks())

    assert states == {partition: DrainState.EMPTY}
    assert _pending(engine, [partition]) == 0


def test_a_partition_another_drainer_holds_is_busy_and_the_rest_of_the_block_drains(
    postgres_url: str,
) -> None:
    """PostgreSQL only: on SQLite a drain holds the one writer lock, not partitions."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    ids = _ids_in("t1", set(BLOCK), 24)
    admit_upserts(engine, "t1", ids)
    held = partition_of("t1", ResourceKey("thing", ids[0]), STORE_PARTITIONS)
    others = [p for p in BLOCK if p != held]

    with engine.connect() as holder:
        holder.execute(text(f"SELECT pg_advisory_lock({PARTITION_LOCK_SPACE}, {held})"))
        holder.commit()
        states = _drainer(engine, 500).drain(BLOCK, DrainHooks())
        holder.execute(text(f"SELECT pg_advisory_unlock({PARTITION_LOCK_SPACE}, {held})"))
        holder.commit()

    assert states == {p: DrainState.BUSY if p == held else DrainState.EMPTY for p in BLOCK}
    assert _pending(engine, others) == 0
    assert _pending(engine, [held]) > 0
    engine.dispose()
