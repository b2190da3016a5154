"""How PostgreSQL plans the drain's statements: planned once per connection.

A drain batch's read and write are prepared on the connection and keep one generic plan
(its transaction allows index probes only, so the plan cannot depend on the arguments or
on statistics). Every other statement the driver prepares, as each ``executemany``
does, is still planned for its actual arguments each time.
"""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from bulkapi.applier import Applier
from bulkapi.core.operations import OpStatus
from bulkapi.core.plan import RetryPolicy
from bulkapi.dispatch.drainer import DrainHooks, DrainState, PartitionDrainer
from bulkapi.registry import TypeRegistry
from bulkapi.store.database import driver_cursor, make_engine, single_read
from bulkapi.store.migrate import upgrade
from bulkapi.store.tables import operations
from tests.support import STORE_PARTITIONS, admit_upserts


def _plans(engine: Engine) -> dict[str, tuple[int, int]]:
    """The connection's prepared statements: (generic plans, custom plans) by their text.
    Read in autocommit: ending a transaction by a rollback would deallocate them all."""
    with single_read(engine) as conn:
        rows = conn.exec_driver_sql(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
        )
        return {row[0]: (row[1], row[2]) for row in rows}


def _drained(engine: Engine) -> None:
    drainer = PartitionDrainer(engine, 500, 60.0, Applier(TypeRegistry([])), RetryPolicy(), 10)
    states = drainer.drain(list(range(STORE_PARTITIONS)), DrainHooks())
    assert set(states.values()) == {DrainState.EMPTY}


def test_drain_statements_keep_one_plan_and_others_are_planned_each_time(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url, pool_size=1)  # one connection: the drain's
    try:
        upgrade(engine)
        keys = [f"k{i}" for i in range(40)]
        admit_upserts(engine, "t1", keys)
        _drained(engine)
        first = _plans(engine)
        for _ in range(2):  # two more jobs over the same keys
            admit_upserts(engine, "t1", keys)
            _drained(engine)
        with engine.begin() as conn:  # an executemany outside any drain
            driver_cursor(conn).executemany(
                "UPDATE operations SET attempts = attempts WHERE idx = %s", [(i,) for i in range(8)]
            )
        plans = _plans(engine)
        with single_read(engine) as conn:
            assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"
            left = conn.execute(
                select(func.count()).where(operations.c.status == OpStatus.PENDING.value)
            ).scalar_one()
    finally:
        engine.dispose()

    assert left == 0
    reads = [p for text, p in plans.items() if "pg_try_advisory_xact_lock" in text]
    # A write names only the parts its batch needs (a job to start, effects, history).
    writes = [p for text, p in plans.items() if "UPDATE operations AS o" in text]
    assert len(reads) == 1  # the same statement batch after batch
    # Planned generically, never for the arguments, and that plan reused by later batches.
    assert all(custom == 0 for _, custom in [*reads, *writes])
    earlier = [p for text, p in first.items() if "pg_try_advisory_xact_lock" in text]
    assert reads[0][0] > earlier[0][0] >= 1
    assert sum(generic for generic, _ in writes) >= 3  # a batch or more per job
    (custom,) = [p for text, p in plans.items() if text.startswith("UPDATE operations SET")]
    assert custom == (0, 8)
