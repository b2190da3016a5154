"""Which operations a SQLite drain batch takes: each tenant's share in key order across
partitions, from the key of its oldest pending operation, going round to its first keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bulkapi.core.keys import ResourceKey, partition_of
from bulkapi.store.database import make_engine, utcnow
from bulkapi.store.drain import Batch, read_batch
from bulkapi.store.migrate import upgrade
from tests.support import STORE_PARTITIONS, admit_upserts


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'batches.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def _read(engine: Engine, partition: int, size: int) -> Batch:
    with engine.begin() as conn:
        return read_batch(conn, [partition], size, utcnow())


def _keys(batch: Batch) -> list[tuple[str, int]]:
    return [(p.operation.key.id, p.seq) for p in batch.pending]


def test_a_share_runs_in_key_order_from_the_oldest_operation_and_goes_round(
    engine: Engine,
) -> None:
    later = [f"k{n:02}" for n in range(10)]
    first = [f"k{n:02}" for n in range(10, 20)]
    admit_upserts(engine, "t1", first)  # k10..k19 are older than k00..k09
    admit_upserts(engine, "t1", later)
    start = partition_of("t1", ResourceKey("thing", "k10"), STORE_PARTITIONS)

    assert _keys(_read(engine, start, 5)) == [(f"k{n}", 1) for n in range(10, 15)]
    went_round = _keys(_read(engine, start, 15))
    assert went_round == [(rid, 1) for rid in first + later[:5]]


def test_each_key_brings_its_lowest_sequence_numbers_and_its_own_partition(
    engine: Engine,
) -> None:
    ids = [f"k{n:02}" for n in range(8)]
    admit_upserts(engine, "t1", ids)
    admit_upserts(engine, "t1", ids[:2])  # k00 and k01 once more: sequence 2
    start = partition_of("t1", ResourceKey("thing", "k00"), STORE_PARTITIONS)

    batch = _read(engine, start, 3)

    assert _keys(batch) == [("k00", 1), ("k00", 2), ("k01", 1)]
    assert [p.partition for p in batch.pending] == [
        partition_of("t1", p.operation.key, STORE_PARTITIONS) for p in batch.pending
    ]


def test_tenants_waiting_in_the_partition_share_the_batch(engine: Engine) -> None:
    big = [f"b{n:03}" for n in range(200)]
    admit_upserts(engine, "heavy", big)
    start = partition_of("heavy", ResourceKey("thing", "b000"), STORE_PARTITIONS)
    light = next(
        rid
        for rid in (f"s{n}" for n in range(1000))
        if partition_of("light", ResourceKey("thing", rid), STORE_PARTITIONS) == start
    )
    admit_upserts(engine, "light", [light])

    batch = _read(engine, start, 10)

    tenants = [p.tenant_id for p in batch.pending]
    assert tenants.count("light") == 1
    assert tenants.count("heavy") == 5  # half the batch, however much more it has waiting
