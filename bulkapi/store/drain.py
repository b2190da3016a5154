"""Draining partitions, the store's half: lock and read a batch, then write its plan.

What happens to each operation is decided by ``core.plan``; this module only locks,
reads and writes, set-based. On PostgreSQL a batch is one statement that takes the
locks of the partitions asked for (those no other drainer holds), locks the batch's
operation rows and reads them with their jobs' flags and their resources' states, then
one statement that writes the plan, and the COMMIT. Not in pipeline mode: a backend in
the middle of a pipeline is "active" waiting for the rest of it, which no
idle-in-transaction timeout ends, so a drainer frozen mid-pipeline would keep its
partitions for as long as it stays frozen.

Locks and who waits on them: each partition's transaction-scoped advisory lock keeps
other drainers of it out for the whole batch; the operation rows are locked from the
read on, so a cancel (which skips locked rows) cannot change them under the
batch. Resource rows are *not* locked while the batch is planned: only a drain of the
partition writes a key with pending operations (sync writes wait for zero pending), and
admission only raises ``admitted_seq``/``pending``, which the write below adjusts
relative to the row's current value. Resource rows are locked only by the final write,
and released by the COMMIT sent with it, so an admission never waits on a drain that
stalls while planning. A drainer that vanishes mid-batch holds its partitions only as
long as PostgreSQL keeps its transaction (see ``database.py`` for the timeouts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.engine import Connection

from bulkapi.core.apply import ResourceState
from bulkapi.core.jobs import JobStatus
from bulkapi.core.keys import ResourceKey
from bulkapi.core.operations import Operation, OpKind, OpStatus
from bulkapi.core.plan import BatchPlan, JobFacts, Pending, StateKey
from bulkapi.store.database import (
    Cte,
    as_utc,
    dialect_insert,
    driver_cursor,
    is_postgres,
    probes_only,
    sqlite_timestamp,
)
from bulkapi.store.effects import effect_values, effects_cte
from bulkapi.store.history import history_ctes, record_history_sqlite
from bulkapi.store.tables import effects, job_status_history, jobs

#: Tenants served per batch; the rest wait for the next batch (oldest first).
MAX_TENANTS_PER_BATCH = 8

#: First half of the PostgreSQL advisory-lock key for partitions ("bu").
PARTITION_LOCK_SPACE = 0x6275

_PENDING = OpStatus.PENDING.value


@dataclass(frozen=True, slots=True)
class Batch:
    """Some partitions' next operations, locked, with what planning them needs."""

    pending: list[Pending]
    states: dict[StateKey, ResourceState]
    jobs: dict[str, JobFacts]
    #: The batch's jobs still ``queued`` when read: the write moves them to ``processing``
    #: (and a batch of jobs already under way skips that statement).
    queued: set[str] = field(default_factory=set)
    #: Partitions asked for that another drainer holds: nothing was read from them.
    busy: frozenset[int] = frozenset()
    #: Partitions asked for that may hold more than the batch took: a tenant's share of
    #: one came back full, or more tenants wait in it than a batch serves.
    more: set[int] = field(default_factory=set)


def read_batch(
    conn: Connection,
    partitions: Sequence[int],
    batch_size: int,
    now: datetime,
    *,
    spill: bool = True,
) -> Batch:
    """Lock those of ``partitions`` no other drainer holds, and their next batch.

    Several small partitions share one batch: a small job over a hundred keys touches
    some fifty partitions, and one transaction for all of their few operations costs
    what one costs for a single partition's.

    In each partition, each waiting tenant (longest-waiting first, at most
    ``MAX_TENANTS_PER_BATCH``) gets an equal share of the batch, oldest operations first:
    a tenant with a million queued operations cannot make another's ten wait behind
    them. Oldest first also means every key in the batch brings its lowest pending
    sequence numbers (for one key, id order is admission order). Keys waiting for a
    crashed rule's retry are left out whole.

    SQLite has one writer at a time, so a drain there holds every partition: with
    ``spill`` it goes on from the first of ``partitions`` to the next ones with pending
    work until the batch is full (fewer, fuller transactions), and reads each tenant's
    share in key order (see ``_read_batch_sqlite``).
    """
    if is_postgres(conn):
        return _read_batch_postgres(conn, partitions, batch_size, now)
    return _read_batch_sqlite(conn, partitions, batch_size, now, spill)


def write_plan(
    conn: Connection, batch: Batch, plan: BatchPlan, now: datetime, keep_history: int
) -> list[str]:
    """Write the plan of ``batch`` and commit; the jobs whose last operation in some
    partition the batch finished (the ones that may now be done). Each key keeps its
    newest ``keep_history`` versions in its history."""
    # Only jobs of which something was decided: a job whose operations were all put off
    # (a crashed rule, retried later) has not started.
    queued = sorted(batch.queued.intersection(job_id for job_id, _ in plan.tallies))
    if is_postgres(conn):
        return _write_plan_postgres(conn, plan, queued, now, keep_history)
    return _write_plan_sqlite(conn, plan, queued, now, keep_history)


# -- PostgreSQL ---------------------------------------------------------------------------

_PG_READ = f"""
WITH got AS MATERIALIZED (
    SELECT g.partition, pg_try_advisory_xact_lock({PARTITION_LOCK_SPACE}, g.partition) AS ok
    FROM unnest(%(partitions)s::integer[]) AS g(partition)
),
waiting AS MATERIALIZED (
    SELECT g.partition, t.tenant_id, count(*) OVER (PARTITION BY g.partition) AS tenants
    FROM got AS g CROSS JOIN LATERAL (
        SELECT o.tenant_id, min(o.id) AS oldest
        FROM operations AS o
        WHERE o.partition = g.partition AND o.status = 'pending'
        GROUP BY o.tenant_id
        ORDER BY oldest
        LIMIT {MAX_TENANTS_PER_BATCH}
    ) AS t
    WHERE g.ok
),
share AS MATERIALIZED (
    SELECT greatest(1, %(batch_size)s / greatest(1, count(*))) AS n FROM waiting
),
held AS MATERIALIZED (  -- keys waiting for a crashed rule's retry: a partial index
    SELECT r.tenant_id, r.type, r.rid FROM resources AS r
    WHERE r.retry_at IS NOT NULL AND r.retry_at > %(now)s
      AND r.tenant_id IN (SELECT tenant_id FROM waiting)
),
batch AS (
    SELECT w.tenants, b.* FROM waiting AS w CROSS JOIN LATERAL (
        SELECT o.partition, o.id, o.job_id, o.idx, o.tenant_id, o.type, o.rid, o.seq, o.op,
               o.data, o.if_version, o.attempts
        FROM operations AS o
        WHERE o.partition = w.partition AND o.tenant_id = w.tenant_id
          AND o.status = 'pending'
          AND NOT EXISTS (
              SELECT 1 FROM held AS h
              WHERE h.tenant_id = o.tenant_id AND h.type = o.type AND h.rid = o.rid)
        ORDER BY o.id
        LIMIT (SELECT n FROM share)
        FOR UPDATE OF o
    ) AS b
)
SELECT g.ok, g.partition, (SELECT n FROM share), b.tenants,
       b.partition, b.id, b.job_id, b.idx, b.tenant_id, b.type, b.rid, b.seq, b.op,
       b.data, b.if_version, b.attempts, j.deadline, j.cancelled_at IS NOT NULL,
       j.status = 'queued', r.version,
       CASE WHEN row_number() OVER (
           PARTITION BY b.tenant_id, b.type, b.rid ORDER BY b.seq) = 1 THEN r.data END
FROM got AS g
LEFT JOIN batch AS b ON b.partition = g.partition
LEFT JOIN jobs AS j ON j.id = b.job_id
LEFT JOIN resources AS r ON r.tenant_id = b.tenant_id AND r.type = b.type AND r.rid = b.rid
"""


def _read_batch_postgres(
    conn: Connection, partitions: Sequence[int], batch_size: int, now: datetime
) -> Batch:
    cursor = driver_cursor(conn)
    probes_only(cursor)
    cursor.execute(
        _PG_READ,
        {"partitions": list(partitions), "batch_size": batch_size, "now": now},
        prepare=True,  # planned once per connection: see ``probes_only``
    )
    rows = cursor.fetchall()
    # Each row: the partition's lock (got it?), the partition, the share per tenant, the
    # tenants waiting in it, then one operation (all NULL when none was read from it).
    busy = frozenset(row[1] for row in rows if not row[0])
    read = [row[4:] for row in rows if row[5] is not None]
    batch = Batch([], {}, {}, busy=busy)
    _add_rows(batch, read, text=False)
    taken = Counter((row[1], row[8]) for row in rows if row[5] is not None)
    batch.more.update(partition for (partition, _), count in taken.items() if count >= rows[0][2])
    batch.more.update(
        row[1] for row in rows if row[3] is not None and row[3] >= MAX_TENANTS_PER_BATCH
    )
    return batch


#: The batch's write is one statement: each part below is a CTE, and the statement's own
#: query writes the rows others wait for (resource rows, then counters), after every CTE
#: before it has run (``ahead``), right before the COMMIT.
#:
#: Jobs of the batch still ``queued`` move to ``processing``. A job row another
#: transaction holds is skipped, not waited for: that is another drain moving it (its
#: commit does it), a settle or a cancel. A job left ``queued`` by a drain that rolled
#: back is moved by a later batch, or at the latest by the settle that finishes it
#: (which records ``processing`` for any job in which something ran). Without the skip,
#: every drain of a new job's partitions queued behind the first one's whole batch.
_PG_START_JOBS = """
moved AS (
    UPDATE jobs SET status = 'processing', started_at = %(now)s
    WHERE id IN (
        SELECT id FROM jobs WHERE id = ANY(%(queued)s) AND status = 'queued'
        ORDER BY id FOR UPDATE SKIP LOCKED)
    RETURNING id
),
started AS (
    INSERT INTO job_status_history (job_id, status, at)
    SELECT id, 'processing', %(now)s FROM moved
    ON CONFLICT DO NOTHING
    RETURNING 1
)"""
_PG_FINISH = """
finished AS (
    UPDATE operations AS o
    SET status = f.status, version = f.version, error_code = f.error_code,
        error_message = f.error_message, attempts = coalesce(f.attempts, o.attempts),
        finished_at = CASE WHEN f.status = 'pending' THEN NULL ELSE %(now)s END
    FROM unnest(%(o_ids)b::bigint[], %(o_statuses)b::varchar[], %(o_versions)b::integer[],
                %(o_codes)b::varchar[], %(o_messages)b::text[], %(o_attempts)b::smallint[])
      AS f(id, status, version, error_code, error_message, attempts)
    WHERE o.id = f.id
    RETURNING 1
)"""
#: The rows others wait for: the batch's resource rows (hot keys' admissions queue on
#: them), then its counters. The counters' update reads the resource update's count
#: first, which makes it run only once every resource row is written: the lock order
#: stays cancel's (job rows, only free ones here, then resource rows, then counters),
#: and on hot keys the rows are held for the end of one statement and the commit.
_PG_WRITE_KEYS = """
w AS (
    SELECT * FROM unnest(%(tenants)b::varchar[], %(types)b::varchar[], %(rids)b::varchar[],
                         %(changed)b::boolean[], %(versions)b::integer[],
                         %(datas)b::text[]::jsonb[], %(done)b::integer[],
                         %(retry)b::timestamptz[])
      AS w(tenant_id, type, rid, changed, version, data, done, retry_at)
    WHERE (SELECT n FROM ahead) >= 0
),
locked AS (  -- in key order, as admissions lock: the two never deadlock
    SELECT w.* FROM (SELECT * FROM w ORDER BY tenant_id, type, rid) AS w
    CROSS JOIN LATERAL (
        SELECT FROM resources AS r
        WHERE r.tenant_id = w.tenant_id AND r.type = w.type AND r.rid = w.rid
        FOR UPDATE
    ) AS probe
),
written AS (
    UPDATE resources AS r
    SET version = CASE WHEN w.changed THEN w.version ELSE r.version END,
        data = CASE WHEN w.changed THEN w.data ELSE r.data END,
        updated_at = CASE WHEN w.changed THEN %(now)s ELSE r.updated_at END,
        pending = r.pending - w.done,
        retry_at = w.retry_at
    FROM locked AS w
    WHERE r.tenant_id = w.tenant_id AND r.type = w.type AND r.rid = w.rid
    RETURNING 1
)
UPDATE job_counts AS c
SET succeeded = c.succeeded + t.succeeded, failed = c.failed + t.failed,
    cancelled = c.cancelled + t.cancelled,
    pending = c.pending - t.succeeded - t.failed - t.cancelled
FROM unnest(%(jobs)b::varchar[], %(partitions)b::integer[], %(succeeded)b::integer[],
            %(failed)b::integer[], %(cancelled)b::integer[])
  AS t(job_id, partition, succeeded, failed, cancelled)
WHERE c.job_id = t.job_id AND c.partition = t.partition
  AND (SELECT count(*) FROM written) >= 0
RETURNING c.job_id, c.pending
"""


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _write_plan_postgres(
    conn: Connection, plan: BatchPlan, queued: list[str], now: datetime, keep_history: int
) -> list[str]:
    """One statement and the COMMIT: with the read (and its BEGIN, see ``probes_only``),
    a batch is three round trips and the commit, whatever it holds."""
    finished = [
        (d.ref, d.status.value, d.version, d.error, d.message, None) for d in plan.decided
    ] + [(d.ref, _PENDING, None, None, None, d.attempts) for d in plan.deferred]
    ctes: list[Cte] = []
    if queued:  # ``started`` reads ``moved``: counting it runs both
        ctes.append(Cte("started", _PG_START_JOBS, {"queued": queued}))
    ctes.append(
        Cte(
            "finished",
            _PG_FINISH,
            {
                "o_ids": [f[0] for f in finished],
                "o_statuses": [f[1] for f in finished],
                "o_versions": [f[2] for f in finished],
                "o_codes": [None if f[3] is None else f[3].value for f in finished],
                "o_messages": [f[4] for f in finished],
                "o_attempts": [f[5] for f in finished],
            },
        )
    )
    if plan.effects:
        ctes.append(effects_cte(plan.effects, now))
    ctes += history_ctes(plan.applied, keep_history)
    counted = sorted(plan.tallies)
    keys = plan.keys
    tallies = [plan.tallies[c] for c in counted]
    params: dict[str, Any] = {
        "now": now,
        "tenants": [k.key[0] for k in keys],
        "types": [k.key[1] for k in keys],
        "rids": [k.key[2] for k in keys],
        "changed": [k.changed for k in keys],
        "versions": [k.state.version for k in keys],
        "datas": [_json(k.state.data) if k.changed else None for k in keys],
        "done": [k.done for k in keys],
        "retry": [k.retry_at for k in keys],
        "jobs": [job_id for job_id, _ in counted],
        "partitions": [partition for _, partition in counted],
        "succeeded": [t.succeeded for t in tallies],
        "failed": [t.failed for t in tallies],
        "cancelled": [t.cancelled for t in tallies],
    }
    for cte in ctes:
        params |= cte.params
    # Every CTE but the resource rows' runs first, to completion, by being counted here.
    ahead = " + ".join(f"(SELECT count(*) FROM {cte.name})" for cte in ctes)
    statement = ",".join(cte.text for cte in ctes)
    driver = conn.connection.driver_connection
    cursor = driver.cursor()  # type: ignore[union-attr]
    cursor.execute(
        f"WITH {statement},\nahead AS (SELECT {ahead} AS n),{_PG_WRITE_KEYS}", params, prepare=True
    )
    finished_jobs = sorted({job_id for job_id, pending in cursor.fetchall() if pending == 0})
    driver.commit()  # type: ignore[union-attr]
    return finished_jobs


# -- SQLite -------------------------------------------------------------------------------
# One writer at a time already (BEGIN IMMEDIATE), in-process: plain statements, with
# ``executemany`` for the writes.


#: Partitions with pending work, one index probe each (a loose index scan).
_SQLITE_PARTITIONS = """
WITH RECURSIVE busy(partition) AS (
    SELECT min(partition) FROM operations WHERE status = 'pending'
    UNION ALL
    SELECT (SELECT min(partition) FROM operations
            WHERE status = 'pending' AND partition > busy.partition)
    FROM busy WHERE busy.partition IS NOT NULL
)
SELECT partition FROM busy WHERE partition IS NOT NULL
"""
_SQLITE_TENANTS = (
    "SELECT tenant_id FROM operations WHERE partition = ? AND status = 'pending'"
    " GROUP BY tenant_id ORDER BY min(id) LIMIT ?"
)
_SQLITE_BATCH_ROWS = """
SELECT o.partition, o.id, o.job_id, o.idx, o.tenant_id, o.type, o.rid, o.seq, o.op, o.data,
       o.if_version, o.attempts, j.deadline, j.cancelled_at IS NOT NULL, j.status = 'queued',
       r.version, r.data
FROM operations AS o
JOIN jobs AS j ON j.id = o.job_id
JOIN resources AS r ON r.tenant_id = o.tenant_id AND r.type = o.type AND r.rid = o.rid
WHERE o.tenant_id = ? AND o.status = 'pending' AND (r.retry_at IS NULL OR r.retry_at <= ?)
"""
_SQLITE_READ_PARTITION = f"{_SQLITE_BATCH_ROWS} AND o.partition = ? ORDER BY o.id LIMIT ?"
_SQLITE_OLDEST_KEY = (
    "SELECT type, rid FROM operations WHERE partition = ? AND tenant_id = ?"
    " AND status = 'pending' ORDER BY id LIMIT 1"
)
_SQLITE_READ_FROM_KEY = (
    f"{_SQLITE_BATCH_ROWS} AND (o.type, o.rid) >= (?, ?) ORDER BY o.type, o.rid, o.seq LIMIT ?"
)
_SQLITE_READ_UP_TO_KEY = (
    f"{_SQLITE_BATCH_ROWS} AND (o.type, o.rid) < (?, ?) ORDER BY o.type, o.rid, o.seq LIMIT ?"
)


def _read_batch_sqlite(
    conn: Connection, partitions: Sequence[int], batch_size: int, now: datetime, spill: bool
) -> Batch:
    """Each key's row comes along in the same query as its operations.

    With ``spill``, a tenant's share is read in key order, across all partitions,
    starting at the key of its oldest pending operation in the partition at hand (and
    going round to its first keys when the last ones run out): neighbouring keys share
    the pages of every B-tree a batch writes, so a batch's commit writes a few pages per
    hundred operations instead of a page or more per operation, as a batch of keys
    scattered over the whole table (one partition's) did. Starting at the oldest
    operation is what keeps every key moving under a steady stream of new work. A share
    read that way may come from any partition, so a full one counts for every partition
    asked for.
    """
    cursor = driver_cursor(conn)
    stamp = sqlite_timestamp(conn, now)
    batch = Batch([], {}, {})
    if not spill:
        share_of_batch = max(1, batch_size // len(partitions))
        for part in partitions:
            tenants = _waiting_tenants(cursor, part)
            share = max(1, share_of_batch // max(1, len(tenants)))
            for tenant_id in tenants:
                rows = cursor.execute(
                    _SQLITE_READ_PARTITION, (tenant_id, stamp, part, share)
                ).fetchall()
                _add_rows(batch, rows, text=True)
                if len(rows) >= share or len(tenants) >= MAX_TENANTS_PER_BATCH:
                    batch.more.add(part)
        return batch
    busy = sorted(
        (row[0] for row in cursor.execute(_SQLITE_PARTITIONS)),
        key=lambda p: (p < partitions[0], p),
    )
    served: set[str] = set()
    room = batch_size
    full = False
    for part in busy:
        tenants = [t for t in _waiting_tenants(cursor, part) if t not in served]
        share = max(1, room // max(1, len(tenants)))
        full = full or len(tenants) >= MAX_TENANTS_PER_BATCH
        for tenant_id in tenants:
            served.add(tenant_id)
            start = cursor.execute(_SQLITE_OLDEST_KEY, (part, tenant_id)).fetchone()
            rows = cursor.execute(
                _SQLITE_READ_FROM_KEY, (tenant_id, stamp, *start, share)
            ).fetchall()
            if len(rows) < share:
                rows += cursor.execute(
                    _SQLITE_READ_UP_TO_KEY, (tenant_id, stamp, *start, share - len(rows))
                ).fetchall()
            _add_rows(batch, rows, text=True)
            full = full or len(rows) >= share
            room -= len(rows)
        if room <= 0:
            full = True
            break
    if full:
        batch.more.update(partitions)
    return batch


def _waiting_tenants(cursor: Any, partition: int) -> list[str]:
    """The partition's tenants with pending operations, longest-waiting first."""
    return [row[0] for row in cursor.execute(_SQLITE_TENANTS, (partition, MAX_TENANTS_PER_BATCH))]


def _add_rows(batch: Batch, rows: list[Any], *, text: bool) -> None:
    """Add read rows (operation, its job's flags, its resource's state) to the batch.
    Operations' documents come as text (both databases store them so); with ``text``,
    resources' documents and times do too, as SQLite stores them."""
    for (
        partition,
        ref,
        job_id,
        index,
        tenant_id,
        rtype,
        rid,
        seq,
        op,
        data,
        if_version,
        attempts,
        deadline,
        cancelled,
        queued,
        version,
        document,
    ) in rows:
        batch.pending.append(
            Pending(
                ref,
                job_id,
                index,
                tenant_id,
                partition,
                seq,
                Operation(
                    OpKind(op), ResourceKey(rtype, rid), _decoded(data, text=True), if_version
                ),
                attempts,
            )
        )
        state_key = (tenant_id, rtype, rid)
        if version is not None and state_key not in batch.states:
            batch.states[state_key] = ResourceState(version, _decoded(document, text))
        if job_id not in batch.jobs:
            when = _sqlite_time(deadline) if text else deadline
            batch.jobs[job_id] = JobFacts(when, bool(cancelled))
            if queued:
                batch.queued.add(job_id)


def _decoded(document: Any, text: bool) -> Any:
    return orjson.loads(document) if text and document is not None else document


def _sqlite_time(value: str | None) -> datetime | None:
    """A timestamp as SQLAlchemy stores it in SQLite (ISO text, UTC), read back."""
    return None if value is None else as_utc(datetime.fromisoformat(value))


_SQLITE_WRITE_CHANGED = (
    "UPDATE resources SET version = ?, data = ?, updated_at = ?, pending = pending - ?,"
    " retry_at = ? WHERE tenant_id = ? AND type = ? AND rid = ?"
)
_SQLITE_WRITE_UNCHANGED = (
    "UPDATE resources SET pending = pending - ?, retry_at = ?"
    " WHERE tenant_id = ? AND type = ? AND rid = ?"
)
_SQLITE_FINISH = (
    "UPDATE operations SET status = ?, version = ?, error_code = ?, error_message = ?,"
    " finished_at = ? WHERE id = ?"
)
_SQLITE_DEFER = "UPDATE operations SET attempts = ? WHERE id = ?"
_SQLITE_COUNT = (
    "UPDATE job_counts SET succeeded = succeeded + ?, failed = failed + ?,"
    " cancelled = cancelled + ?, pending = pending - ?"
    " WHERE job_id = ? AND partition = ? RETURNING pending"
)


def _write_plan_sqlite(
    conn: Connection, plan: BatchPlan, queued: list[str], now: datetime, keep_history: int
) -> list[str]:
    """``queued`` was read in this transaction, under SQLite's one writer lock: exact."""
    cursor = driver_cursor(conn)
    stamp = sqlite_timestamp(conn, now)
    if queued:
        processing = JobStatus.PROCESSING.value
        conn.execute(
            jobs.update().where(jobs.c.id.in_(queued)).values(status=processing, started_at=now)
        )
        conn.execute(
            dialect_insert(conn, job_status_history).on_conflict_do_nothing(),
            [{"job_id": job_id, "status": processing, "at": now} for job_id in queued],
        )
    cursor.executemany(
        _SQLITE_WRITE_CHANGED,
        [
            (
                k.state.version,
                _json(k.state.data),
                stamp,
                k.done,
                sqlite_timestamp(conn, k.retry_at),
                *k.key,
            )
            for k in plan.keys
            if k.changed
        ],
    )
    cursor.executemany(
        _SQLITE_WRITE_UNCHANGED,
        [(k.done, sqlite_timestamp(conn, k.retry_at), *k.key) for k in plan.keys if not k.changed],
    )
    cursor.executemany(
        _SQLITE_FINISH,
        [
            (
                d.status.value,
                d.version,
                None if d.error is None else d.error.value,
                d.message,
                stamp,
                d.ref,
            )
            for d in plan.decided
        ],
    )
    cursor.executemany(_SQLITE_DEFER, [(d.attempts, d.ref) for d in plan.deferred])
    done: set[str] = set()
    for (job_id, partition), tally in sorted(plan.tallies.items()):
        cursor.execute(
            _SQLITE_COUNT,
            (tally.succeeded, tally.failed, tally.cancelled, tally.done, job_id, partition),
        )
        left = cursor.fetchone()
        if left is not None and left[0] == 0:
            done.add(job_id)
    if plan.effects:
        conn.execute(effects.insert(), effect_values(plan.effects, now))
    record_history_sqlite(conn, plan.applied, now, keep_history)
    return sorted(done)
