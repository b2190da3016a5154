"""Baseline (c), the naive design: one Dramatiq message and one transaction per operation.

Workers run it as ``dramatiq bench.naive`` with ``BENCH_NAIVE_DSN``, ``BENCH_NAIVE_REDIS``
and ``BENCH_NAIVE_NAMESPACE`` set; the benchmark process declares the same actor on its
own broker to send. Generous to the baseline: a raw psycopg upsert per message, no job
records, no ordering bookkeeping.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import dramatiq
import orjson
import psycopg
from dramatiq.brokers.redis import RedisBroker

from bench.baseline_sql import upsert_sql

QUEUE = "bench-naive"
TABLE = "bench_naive"
UPSERT = upsert_sql(TABLE)


def declare(broker: dramatiq.Broker, dsn: str | None) -> dramatiq.Actor[Any, None]:
    local = threading.local()

    def connection() -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(local, "conn", None)
        if conn is None or conn.closed:
            assert dsn is not None
            conn = local.conn = psycopg.connect(dsn)
        return conn

    def naive_upsert(rtype: str, rid: str, data: dict[str, Any]) -> None:
        conn = connection()
        with conn.transaction():
            conn.execute(UPSERT, ("bench", rtype, rid, orjson.dumps(data).decode()))

    return dramatiq.actor(broker=broker, actor_name="naive_upsert", queue_name=QUEUE)(naive_upsert)


def make_broker(redis_url: str, namespace: str) -> RedisBroker:
    broker = RedisBroker(url=redis_url, namespace=namespace)
    dramatiq.set_broker(broker)
    return broker


if "BENCH_NAIVE_REDIS" in os.environ:  # the worker processes
    broker = make_broker(os.environ["BENCH_NAIVE_REDIS"], os.environ["BENCH_NAIVE_NAMESPACE"])
    naive_upsert = declare(broker, os.environ["BENCH_NAIVE_DSN"])
