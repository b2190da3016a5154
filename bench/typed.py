"""Case 'types': what a schema costs at admission, what side effects cost after it.

Each comparison runs side by side in one run, on the same stack (types of
``bench.resource_types``):

- admission of 1,000 operations with the same documents, to an unregistered type and to
  a type with a marshmallow schema (``checked``), interleaved;
- end to end, the same upserts to an unregistered type and to one with a side effect
  that does next to nothing (``stamped``): writes applied per second, and effects run per
  second from the first byte to the last effect's end (read from the lines the effect
  appends to the run's effect log).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.cases import Config
from bench.client import Client, json_body, ndjson_body, upserts
from bench.report import Metric
from bench.stack import Stack

#: Operations per admission request, and requests per type.
ADMISSION_OPS = 1000
#: Seconds the effects of one run may take before the run gives up.
EFFECTS_TIMEOUT = 900


def _effects_finished(log_path: Path, prefix: str, count: int) -> float:
    """Epoch seconds at which the last of the ``count`` effects of ids ``prefix-*`` ended
    (the lines the ``stamp`` effect appends; read as they arrive, complete lines only)."""
    deadline = time.monotonic() + EFFECTS_TIMEOUT
    seen: set[str] = set()
    last = 0.0
    position = 0
    while True:
        with log_path.open("rb") as log:
            log.seek(position)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        position += len(complete)
        for line in complete.splitlines():
            entry = orjson.loads(line)
            if entry["id"].startswith(prefix):
                seen.add(entry["id"])  # an effect runs at least once: count ids
                last = max(last, entry["at"])
        if len(seen) >= count:
            return last
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {count} effects ran")
        time.sleep(0.2)


def types_case(stack: Stack, cfg: Config, log: Callable[[str], None]) -> list[Metric]:
    client = Client(stack.api_url, stack.key)
    requests_per_type = max(10, cfg.admission_sizes[0][1])
    plain = Metric("types", "admission 1k, unregistered type", "ms", distribution=True)
    typed = Metric("types", "admission 1k, marshmallow schema", "ms", distribution=True)
    for i in range(requests_per_type + 2):
        for rtype, metric in (("item", plain), ("checked", typed)):
            ops = upserts(f"adm-{uuid.uuid4().hex[:8]}", ADMISSION_OPS, rtype=rtype)
            body = json_body(ops)
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
    stack.effect_log.touch()
    for _ in range(cfg.reps):
        for rtype, metric in (("item", writes), ("stamped", effected)):
            prefix = f"e2e-{uuid.uuid4().hex[:8]}"
            started = time.time()
            job_id, _ = client.submit(ndjson_body(upserts(prefix, n, rtype=rtype)))
            metric.samples.append(n / (client.finished_at(job_id) - started))
            if rtype == "stamped":
                finished = _effects_finished(stack.effect_log, prefix + "-", n)
                effects.samples.append(n / (finished - started))
    log(
        f"  {n:,} upserts: writes {writes.median:,.0f} ops/s without effects, "
        f"{effected.median:,.0f} with; effects done at {effects.median:,.0f}/s"
    )
    return [plain, typed, writes, effected, effects]
