"""The effect runner against real databases, without a broker: passes, budgets, locks."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from bulkapi.applier import Applier
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import OpKind
from bulkapi.core.plan import AppliedChange, RetryPolicy
from bulkapi.dispatch.actors import declare_partition_actors
from bulkapi.dispatch.drainer import DrainState, PartitionDrainer
from bulkapi.dispatch.effects import EFFECTS_LOCK_SPACE, EffectRunner
from bulkapi.dispatch.lanes import Lane
from bulkapi.dispatch.scheduled import MemoryFlags
from bulkapi.registry import TypeRegistry
from bulkapi.store.database import as_utc, make_engine, utcnow
from bulkapi.store.effect_runs import Claim, claim_attempts, due_effects, due_partitions
from bulkapi.store.effects import record_effects
from bulkapi.store.migrate import upgrade
from bulkapi.store.tables import effects
from bulkapi.types import Effect, EffectEvent, ResourceType
from tests.support import deliver_queued, queued_messages

PARTITION = 3


class Calls:
    def __init__(self, failing: frozenset[tuple[str, int]] = frozenset()) -> None:
        self.seen: list[tuple[str, int, int]] = []
        self.failing = failing

    def __call__(self, event: EffectEvent) -> None:
        self.seen.append((event.id, event.version, event.attempt))
        if (event.id, event.version) in self.failing:
            raise RuntimeError(f"{event.id} v{event.version} refused")


def _change(
    rid: str,
    version: int,
    *,
    tenant: str = "tenant",
    partition: int = PARTITION,
    names: tuple[str, ...] = ("call",),
) -> AppliedChange:
    return AppliedChange(
        tenant,
        ResourceKey("thing", rid),
        partition,
        f"job_x.{rid}.{version}",
        "job_x",
        version,
        OpKind.UPSERT,
        version,
        None,
        {"v": version},
        names,
    )


def _record(engine: Engine, changes: list[tuple[str, int]]) -> None:
    with engine.begin() as conn:
        record_effects(conn, [_change(rid, version) for rid, version in changes], utcnow())


def _set(engine: Engine, rid: str, version: int, **values: object) -> None:
    """Put one change's effects in a state a test needs (waiting for a retry, done...)."""
    with engine.begin() as conn:
        conn.execute(
            update(effects)
            .where(effects.c.tenant_id == "tenant", effects.c.rid == rid)
            .where(effects.c.version == version)
            .values(**values)
        )


def _runner(engine: Engine, calls: Calls, budget: float = 60.0) -> EffectRunner:
    registry = TypeRegistry([ResourceType("thing", effects=(Effect("call", calls),))])
    return EffectRunner(engine, registry, attempts=2, first_backoff=0, budget_seconds=budget)


def _states(engine: Engine) -> dict[tuple[str, int], tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(effects.c.rid, effects.c.version, effects.c.status, effects.c.attempts)
        )
        return {(row.rid, row.version): (row.status, row.attempts) for row in rows}


def test_each_resource_runs_in_version_order(engine: Engine) -> None:
    _record(engine, [("a", 2), ("b", 1), ("a", 1), ("a", 3), ("b", 2)])
    calls = Calls()
    assert _runner(engine, calls).run(PARTITION) is DrainState.EMPTY
    by_key: dict[str, list[int]] = {}
    for rid, version, _ in calls.seen:
        by_key.setdefault(rid, []).append(version)
    assert by_key == {"a": [1, 2, 3], "b": [1, 2]}
    assert set(_states(engine).values()) == {("succeeded", 1)}


def test_a_failure_holds_its_resource_while_it_waits_for_a_retry(engine: Engine) -> None:
    _record(engine, [("a", 1), ("a", 2), ("b", 1)])
    calls = Calls(failing=frozenset({("a", 1)}))
    runner = _runner(engine, calls)
    runner.first_backoff = 3600.0  # the retry is not due within this test
    assert runner.run(PARTITION) is DrainState.EMPTY
    assert sorted(calls.seen) == [("a", 1, 1), ("b", 1, 1)]
    assert _states(engine) == {
        ("a", 1): ("pending", 1),
        ("a", 2): ("pending", 0),
        ("b", 1): ("succeeded", 1),
    }


def test_a_failure_that_gives_up_lets_its_resource_go_on(engine: Engine) -> None:
    _record(engine, [("a", 1), ("a", 2), ("b", 1)])
    calls = Calls(failing=frozenset({("a", 1)}))
    assert _runner(engine, calls).run(PARTITION) is DrainState.EMPTY  # retries due at once
    of_a = [seen for seen in calls.seen if seen[0] == "a"]
    assert of_a == [("a", 1, 1), ("a", 1, 2), ("a", 2, 1)]
    assert _states(engine) == {
        ("a", 1): ("failed", 2),
        ("a", 2): ("succeeded", 1),
        ("b", 1): ("succeeded", 1),
    }


def test_heads_a_pass_did_not_reach_get_their_attempt_back(engine: Engine) -> None:
    _record(engine, [(f"k{n}", 1) for n in range(5)])
    calls = Calls()
    assert _runner(engine, calls, budget=0).run(PARTITION) is DrainState.MORE
    assert len(calls.seen) == 1  # the budget is checked after each handler
    states = _states(engine)
    assert sorted(states.values()) == [("pending", 0)] * 4 + [("succeeded", 1)]


def test_a_second_runner_of_the_partition_finds_it_held(engine: Engine) -> None:
    """PostgreSQL: two runners (as in two worker processes) meet at the advisory lock.
    SQLite: one process, one runner, whose threads meet at its in-memory lock."""
    _record(engine, [("a", 1)])
    inner: list[DrainState] = []

    def nested(event: EffectEvent) -> None:
        inner.append(other.run(PARTITION))

    registry = TypeRegistry([ResourceType("thing", effects=(Effect("call", nested),))])
    runner = EffectRunner(engine, registry, attempts=2, first_backoff=0, budget_seconds=60)
    other = runner
    if engine.dialect.name == "postgresql":
        other = EffectRunner(engine, registry, attempts=2, first_backoff=0, budget_seconds=60)
    assert runner.run(PARTITION) is DrainState.EMPTY
    assert inner == [DrainState.HELD]
    assert _states(engine) == {("a", 1): ("succeeded", 1)}


def test_due_effects_are_each_resources_leading_run_of_due_ones(engine: Engine) -> None:
    """Per resource, its earliest pending effects up to the first that is not due; every
    resource's first before any resource's second; other partitions and finished effects
    left out."""
    with engine.begin() as conn:
        changes = [_change("a", version) for version in (1, 2, 3, 4)]
        changes += [_change("b", 1), _change("b", 2), _change("e", 1), _change("e", 2)]
        changes += [_change("c", 1, names=("call", "notify")), _change("c", 2)]
        changes += [_change("d", 1, partition=PARTITION + 1), _change("a", 1, tenant="other")]
        record_effects(conn, changes, utcnow())
    later = utcnow() + timedelta(hours=1)
    _set(engine, "a", 3, attempts=1, next_attempt_at=later)  # waits for a retry
    _set(engine, "b", 1, attempts=1, next_attempt_at=later)
    _set(engine, "e", 1, status="succeeded", attempts=1)
    with engine.connect() as conn:
        due = [
            (e.tenant_id, e.rid, e.version, e.name)
            for e in due_effects(conn, PARTITION, utcnow(), 100)
        ]
        first_two = due_effects(conn, PARTITION, utcnow(), 2)
    assert due == [
        ("tenant", "a", 1, "call"),
        ("tenant", "e", 2, "call"),
        ("tenant", "c", 1, "call"),
        ("other", "a", 1, "call"),
        ("tenant", "a", 2, "call"),
        ("tenant", "c", 1, "notify"),
        ("tenant", "c", 2, "call"),
    ]
    assert [(e.rid, e.version) for e in first_two] == [("a", 1), ("e", 2)]


def test_effects_waiting_behind_a_retry_do_not_make_their_partition_due(engine: Engine) -> None:
    with engine.begin() as conn:
        changes = [_change("x", version) for version in (1, 2, 3)]
        changes += [_change("y", 1, partition=PARTITION + 1), _change("z", 1, partition=0)]
        changes += [_change("w", version, partition=63) for version in (1, 2)]
        record_effects(conn, changes, utcnow())
    with engine.connect() as conn:
        assert sorted(due_partitions(conn, utcnow())) == [0, PARTITION, PARTITION + 1, 63]
    later = utcnow() + timedelta(hours=1)
    _set(engine, "x", 1, attempts=1, next_attempt_at=later)
    _set(engine, "w", 1, attempts=1, next_attempt_at=later)
    _set(engine, "z", 1, status="succeeded", attempts=1)
    with engine.connect() as conn:
        assert sorted(due_partitions(conn, utcnow())) == [PARTITION + 1]


def test_one_pass_runs_a_resources_due_effects_in_order_up_to_a_failure(engine: Engine) -> None:
    _record(engine, [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("a", 5), ("b", 1)])
    calls = Calls(failing=frozenset({("a", 3)}))
    claimed_together: list[set[int]] = []

    def watch(event: EffectEvent) -> None:
        if not calls.seen:  # during the first call: what did the pass claim?
            claimed_together.append({attempts for _, attempts in _states(engine).values()})
        calls(event)

    registry = TypeRegistry([ResourceType("thing", effects=(Effect("call", watch),))])
    runner = EffectRunner(engine, registry, attempts=2, first_backoff=3600, budget_seconds=60)
    assert runner.run(PARTITION) is DrainState.EMPTY
    assert claimed_together == [{1}]  # one pass took every due effect of a, and b's
    assert calls.seen == [("a", 1, 1), ("b", 1, 1), ("a", 2, 1), ("a", 3, 1)]
    assert _states(engine) == {
        ("a", 1): ("succeeded", 1),
        ("a", 2): ("succeeded", 1),
        ("a", 3): ("pending", 1),
        ("a", 4): ("pending", 0),
        ("a", 5): ("pending", 0),
        ("b", 1): ("succeeded", 1),
    }


def _lose_the_runner_lock(engine: Engine) -> None:
    """What a server restart or a terminated backend does to a runner: PostgreSQL drops
    the session that holds the partition's lock (SQLite's lock is in memory and cannot be
    lost, so there the second runner simply has a lock of its own). The termination is
    waited for (up to a minute): a backend told to end may still hold its locks for a
    moment after the signal."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        ended = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid, 60000) FROM pg_locks"
                " WHERE locktype = 'advisory'"
                " AND classid = :space AND objid = :partition AND objsubid = 2"
            ),
            {"space": EFFECTS_LOCK_SPACE, "partition": PARTITION},
        ).scalars()
        assert list(ended) == [True]
        conn.commit()


def _runner_of(engine: Engine, handler: Callable[[EffectEvent], None]) -> EffectRunner:
    registry = TypeRegistry([ResourceType("thing", effects=(Effect("call", handler),))])
    return EffectRunner(engine, registry, attempts=2, first_backoff=0, budget_seconds=60)


def test_a_runner_that_lost_its_lock_mid_pass_is_not_overtaken(engine: Engine) -> None:
    """While the first runner goes on calling the effects it claimed, a second one that
    gets the partition runs none of them, nor any later effect of their resources."""
    _record(engine, [("x", 1), ("x", 2), ("y", 1)])
    seen: list[tuple[str, str, int]] = []
    second_run: list[DrainState] = []

    def first_call(event: EffectEvent) -> None:
        seen.append(("first", event.id, event.version))
        if not second_run:
            _lose_the_runner_lock(engine)
            second_run.append(second.run(PARTITION))

    first = _runner_of(engine, first_call)
    second = _runner_of(engine, lambda event: seen.append(("second", event.id, event.version)))
    if engine.dialect.name == "postgresql":
        with pytest.raises(OperationalError):  # it finds out when it records the outcomes
            first.run(PARTITION)
    else:
        assert first.run(PARTITION) is DrainState.EMPTY
    assert second_run == [DrainState.EMPTY]
    assert seen == [("first", "x", 1), ("first", "y", 1), ("first", "x", 2)]


def test_a_retry_is_due_its_backoff_after_the_attempt_failed(engine: Engine) -> None:
    _record(engine, [("slow", 1), ("failing", 1)])
    failed_at: list[datetime] = []

    def call(event: EffectEvent) -> None:
        if event.id == "slow":
            time.sleep(0.05)  # the pass goes on for a while before the failure
            return
        failed_at.append(utcnow())
        raise RuntimeError("refused")

    runner = _runner_of(engine, call)
    runner.first_backoff = 100.0
    assert runner.run(PARTITION) is DrainState.EMPTY
    with engine.connect() as conn:
        retry_at = conn.execute(
            select(effects.c.next_attempt_at).where(effects.c.rid == "failing")
        ).scalar_one()
    assert as_utc(retry_at) >= failed_at[0] + timedelta(seconds=100)


def test_a_wakeup_that_finds_the_runner_at_work_is_left_to_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wake-ups that arrive while a runner holds the partition are dropped, not bounced:
    after letting go the runner looks once more and wakes the partition for what came due
    after its last look."""
    _record(engine, [("a", 1)])
    calls = Calls()
    runner = _runner_of(engine, calls)
    broker = StubBroker()
    actors = declare_partition_actors(
        broker,
        PartitionDrainer(engine, 100, 1.0, Applier(runner.registry), RetryPolicy(), 100),
        runner.run,
        send_webhooks=lambda _: DrainState.EMPTY,
        busy_retry_delay=0.25,
        flags=MemoryFlags(),
    )
    queued_while_held: list[int] = []
    run_passes = runner._run_passes

    def then_a_write(conn: Connection, partition: int) -> DrainState:
        state = run_passes(conn, partition)  # its last look found nothing due...
        _record(engine, [("b", 1)])  # ...then a write commits an effect, and its
        for _ in range(3):  # wake-ups (and a sweeper's) come while the lock is still held
            actors.wake(Lane.EFFECTS, PARTITION)
            actors.lanes[Lane.EFFECTS].send(PARTITION)
            deliver_queued(broker)
        queued_while_held.append(queued_messages(broker))
        return state

    monkeypatch.setattr(runner, "_run_passes", then_a_write)
    actors.lanes[Lane.EFFECTS].fn(PARTITION)
    monkeypatch.undo()
    assert queued_while_held == [0]
    assert queued_messages(broker) == 1  # the runner's own wake-up for b
    deliver_queued(broker)
    assert calls.seen == [("a", 1, 1), ("b", 1, 1)]
    assert queued_messages(broker) == 0
    broker.close()


def test_a_claim_updates_each_effect_in_place_on_postgres(postgres_url: str) -> None:
    """A pass's claim sets only columns no index names, on pages with room for the new
    versions: every row's update is HOT (no index entries), counted in its transaction."""
    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        _record(engine, [(f"r{n}", version) for n in range(60) for version in (1, 2)])
        with engine.begin() as conn:
            due = due_effects(conn, PARTITION, utcnow(), 500)
            claim_attempts(conn, [Claim(e.id, utcnow() + timedelta(minutes=1)) for e in due])
            updated, hot = conn.execute(
                text(
                    "SELECT pg_stat_get_xact_tuples_updated('effects'::regclass), "
                    "pg_stat_get_xact_tuples_hot_updated('effects'::regclass)"
                )
            ).one()
        assert len(due) == 120
        assert (updated, hot) == (len(due), len(due))
        assert set(_states(engine).values()) == {("pending", 1)}
    finally:
        engine.dispose()
