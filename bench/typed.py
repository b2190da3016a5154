"""Case 'types': what a schema costs at admission, what effects cost after it.

Each comparison runs side by side in one run, on the same stack:

- admission of 1,000 operations with the same documents, to an unregistered type and to
  a type with a marshmallow schema (tests.types_for_tests ``window``), interleaved;
- end to end, the same upserts to an unregistered type and to one with a side effect
  (``recorded``, whose handler appends a line to a file): writes applied per second, and
  effects run per second from the first byte to the last effect's end.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from bench.cases import Config
from bench.client import Client, json_body, ndjson_body
from bench.report import Metric
from bench.stack import Stack

#: Operations per admission request, and requests per type.
ADMISSION_OPS = 1000
#: Seconds the effects of one run may take before the run gives up.
EFFECTS_TIMEOUT = 900


def _windows(rtype: str, prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {"op": "upsert", "type": rtype, "id": f"{prefix}-{i}", "data": {"start": i, "end": i + 1}}
        for i in range(count)
    ]


def _effects_finished(dsn: str, prefix: str, count: int) -> float:
    """Epoch seconds at which the last of the ``count`` effects of ids ``prefix-*`` ended."""
    deadline = time.monotonic() + EFFECTS_TIMEOUT
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'),"
                " extract(epoch FROM max(finished_at))"
                " FROM effects WHERE type = 'recorded' AND rid LIKE %s",
                (f"{prefix}-%",),
            ).fetchone()
            assert row is not None
            if row[0] >= count:
                return float(row[1])
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {row[0]} of {count} effects ran")
            time.sleep(0.05)


def types_case(stack: Stack, cfg: Config, log: Callable[[str], None]) -> list[Metric]:
    client = Client(stack.api_url, stack.key)
    requests_per_type = max(10, cfg.admission_sizes[0][1])
    plain = Metric("types", "admission 1k, unregistered type", "ms", distribution=True)
    typed = Metric("types", "admission 1k, marshmallow schema", "ms", distribution=True)
    for i in range(requests_per_type + 2):
        for rtype, metric in (("item", plain), ("window", typed)):
            body = json_body(_windows(rtype, f"adm-{uuid.uuid4().hex[:8]}", ADMISSION_OPS))
            job_id, seconds = client.submit(body, ndjson=False)
            if i >= 2:  # the first two of each warm up
                metric.samples.append(seconds * 1000)
            client.wait_job(job_id)
    log(
        f"  admission 1k p50: unregistered {plain.percentile(0.5):.1f} ms, "
        f"schema {typed.percentile(0.5):.1f} ms "
        f"({typed.percentile(0.5) / plain.percentile(0.5):.2f}x)"
    )

    n = cfg.throughput_ops
    writes = Metric("types", "e2e writes, no effects", "ops/s", size=n)
    effected = Metric("types", "e2e writes, one effect each", "ops/s", size=n)
    effects = Metric("types", "effects run, from first byte", "effects/s", size=n)
    for _ in range(cfg.reps):
        for rtype, metric in (("item", writes), ("recorded", effected)):
            prefix = f"e2e-{uuid.uuid4().hex[:8]}"
            started = time.time()
            job_id, _ = client.submit(ndjson_body(_windows(rtype, prefix, n)))
            metric.samples.append(n / (client.finished_at(job_id) - started))
            if rtype == "recorded":
                effects.samples.append(n / (_effects_finished(stack.dsn, prefix, n) - started))
    log(
        f"  {n:,} upserts: writes {writes.median:,.0f} ops/s without effects, "
        f"{effected.median:,.0f} with; effects done at {effects.median:,.0f}/s"
    )
    return [plain, typed, writes, effected, effects]
