"""Case 'embedded': one ``bulkapi serve`` with SQLite and its in-process workers (no
broker), a 100k-operation job end to end, beside a SQLite ``executemany`` floor.

The floor is what a user would write instead: the same upserts into a table of the same
shape (``bench.baseline_sql``), in a SQLite file of its own with WAL and
``synchronous=NORMAL``, ``executemany`` with 500 upserts per transaction.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.cases import RAW_BATCH, Config, warm
from bench.client import Client, document, ndjson_body, upserts
from bench.report import Metric
from bench.stack import Stack

#: Operations of the embedded job, whatever the run's size: the target is stated for 100k.
EMBEDDED_OPS = 100_000
#: The SQLite floor's table.
TABLE = "bench_raw"
_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    tenant_id varchar(40) NOT NULL, type varchar(64) NOT NULL, rid varchar(128) NOT NULL,
    version integer NOT NULL, data text,
    created_at timestamp NOT NULL, updated_at timestamp NOT NULL,
    PRIMARY KEY (tenant_id, type, rid))
"""
_UPSERT = f"""
INSERT INTO {TABLE} AS r (tenant_id, type, rid, version, data, created_at, updated_at)
VALUES (?, ?, ?, 1, ?, ?, ?)
ON CONFLICT (tenant_id, type, rid) DO UPDATE
SET version = r.version + 1, data = excluded.data, updated_at = excluded.updated_at
"""


def sqlite_floor(path: Path, ops: int) -> float:
    """The same upserts into SQLite (WAL, synchronous=NORMAL), 500 per transaction; ops/s."""
    prefix = f"raw-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).isoformat()
    rows = [
        ("bench", "item", f"{prefix}-{i}", orjson.dumps(document(i)).decode(), now, now)
        for i in range(ops)
    ]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_DDL)
        conn.execute(f"DELETE FROM {TABLE}")
        started = time.perf_counter()
        for start in range(0, ops, RAW_BATCH):
            conn.execute("BEGIN")
            conn.executemany(_UPSERT, rows[start : start + RAW_BATCH])
            conn.execute("COMMIT")
        return ops / (time.perf_counter() - started)
    finally:
        conn.close()


def embedded_case(stack: Stack, cfg: Config, log: Callable[[str], None]) -> list[Metric]:
    n = EMBEDDED_OPS
    floor = Metric("embedded", "SQLite executemany floor", "ops/s", size=n)
    seconds = Metric("embedded", "embedded 100k job end-to-end", "s", size=n)
    rate = Metric("embedded", "embedded e2e", "ops/s", size=n)
    served, floor_db = stack.logs / "embedded.db", stack.logs / "floor.db"
    proc, url, key = stack.embedded(served)
    try:
        client = Client(url, key)
        warm(client)
        for _ in range(cfg.reps):
            floor.samples.append(sqlite_floor(floor_db, n))
            body = ndjson_body(upserts(f"emb-{uuid.uuid4().hex[:8]}", n))
            started = time.time()
            job_id, _ = client.submit(body)
            elapsed = client.finished_at(job_id) - started
            seconds.samples.append(elapsed)
            rate.samples.append(n / elapsed)
    finally:
        proc.stop()
        for db in (served, floor_db):  # the databases go, the server's log stays
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
    log(
        f"  embedded {n:,} ops: {seconds.median:.1f} s ({rate.median:,.0f} ops/s); "
        f"SQLite floor {floor.median:,.0f} ops/s"
    )
    return [floor, seconds, rate]
