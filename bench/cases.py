"""The admission, throughput, sync PUT and growth cases, each beside its baseline."""

from __future__ import annotations

import re
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.baseline_sql import table_ddl, upsert_sql
from bench.client import Client, document, json_body, ndjson_body, upserts
from bench.report import CRUD, Metric
from bench.stack import REDIS_URL, WEB_PROCESSES, WEB_THREADS, Stack

HERE = Path(__file__).resolve().parent
#: Upserts the raw baseline applies per transaction (bulkapi's default batch size).
RAW_BATCH = 500
#: The raw baseline's table, in the run's database.
RAW_TABLE = "bench_raw"
#: Operations per hot-key request: each of the 100 keys once (a key may appear once per request).
HOT_KEYS = 100
#: Concurrent clients submitting the hot-key requests.
HOT_CLIENTS = 4
#: Largest request the service accepts by default; bigger jobs are sent as several requests.
MAX_REQUEST_OPS = 100_000
#: Operations of the large admission, sent to a fresh API to read its peak RSS.
BIG_ADMISSION = 100_000


@dataclass(frozen=True)
class Config:
    reps: int
    #: (operations per request, requests per format) for case 1, to the run's API.
    admission_sizes: tuple[tuple[int, int], ...]
    #: 100k NDJSON admissions, each to an API started for it.
    big_admissions: int
    workers: tuple[int, ...]
    throughput_ops: int
    naive_ops: int
    sequential_puts: int
    wrk_seconds: int
    growth_sizes: tuple[int, ...]


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _label(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"


def _client(stack: Stack) -> Client:
    return Client(stack.api_url, stack.key)


# --- case 1: admission ------------------------------------------------------------------


def _reset_peak_rss(pids: list[int]) -> None:
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def warm(client: Client, requests: int = 3) -> None:
    """A few small jobs, drained: pools, imports and code paths are warm afterwards."""
    for _ in range(requests):
        client.wait_job(client.submit(ndjson_body(upserts(f"warm-{_tag()}", 1000)))[0])


def big_admission(stack: Stack, size: int) -> tuple[float, float, float]:
    """One ``size``-op NDJSON request to a freshly started API (warmed with small jobs):
    seconds to the 202, the API's RSS before it and its peak RSS during it (MB, the
    largest over its gunicorn worker processes)."""
    proc, url = stack.serve(stack.env, "api-fresh")
    try:
        client = Client(url, stack.key)
        warm(client)
        pids = proc.children()
        body = ndjson_body(upserts(f"big-{_tag()}", size))
        idle = max(_status_mb(pid, "VmRSS") for pid in pids)
        _reset_peak_rss(pids)
        job_id, seconds = client.submit(body)
        peak = max(_status_mb(pid, "VmHWM") for pid in pids)
        client.wait_job(job_id)
    finally:
        proc.stop()
    return seconds, idle, peak


def admission(stack: Stack, cfg: Config, log: Callable[[str], None]) -> list[Metric]:
    """POST /v1/bulk -> 202 latency; each job drains before the next request (not timed).

    Small sizes go to the run's API, JSON and NDJSON alternating; the 100k NDJSON
    requests each go to an API started for it, so its peak RSS is that of one request.
    """
    client = _client(stack)
    warm(client)
    metrics: list[Metric] = []
    for size, count in cfg.admission_sizes:
        json_m = Metric(
            "admission", f"admission json {_label(size)}", "ms", size=size, distribution=True
        )
        nd_m = Metric(
            "admission", f"admission ndjson {_label(size)}", "ms", size=size, distribution=True
        )
        for _ in range(count):
            for ndjson, metric in ((False, json_m), (True, nd_m)):
                ops = upserts(f"adm-{_tag()}", size)
                body = ndjson_body(ops) if ndjson else json_body(ops)
                del ops
                job_id, seconds = client.submit(body, ndjson)
                metric.samples.append(seconds * 1000)
                client.wait_job(job_id)
        log(
            f"  admission {_label(size)}: json p50 {json_m.percentile(0.5):.1f} "
            f"p99 {json_m.percentile(0.99):.1f} ms, ndjson p50 {nd_m.percentile(0.5):.1f} "
            f"p99 {nd_m.percentile(0.99):.1f} ms over {count} requests each"
        )
        metrics += [json_m, nd_m]
    size = BIG_ADMISSION
    big = Metric("admission", f"admission ndjson {_label(size)}", "ms", size=size)
    idle = Metric("admission", "API RSS before 100k admission", "MB")
    rss = Metric("admission", "API peak RSS, 100k admission", "MB")
    for _ in range(cfg.big_admissions):
        seconds, before, peak = big_admission(stack, size)
        big.samples.append(seconds * 1000)
        idle.samples.append(before)
        rss.samples.append(peak)
    if big.samples:
        log(f"  admission 100k ndjson: {big.median:,.0f} ms, peak RSS {rss.median:.0f} MB")
        metrics += [big, idle, rss]
    return metrics


# --- case 2: end-to-end throughput and its baselines ------------------------------------


def e2e_spread(stack: Stack, ops: int) -> float:
    """One NDJSON request of ``ops`` upserts over as many fresh keys; ops/s to terminal."""
    client = _client(stack)
    body = ndjson_body(upserts(f"spread-{_tag()}", ops))
    started = time.time()
    job_id, _ = client.submit(body)
    return ops / (client.finished_at(job_id) - started)


def e2e_hot(stack: Stack, ops: int) -> float:
    """``ops`` upserts over 100 keys: ops/100 requests (each key once per request),
    sent by a few concurrent clients; ops/s from the first byte to the last job terminal."""
    prefix = f"hot-{_tag()}"
    bodies = [ndjson_body(upserts(prefix, HOT_KEYS, HOT_KEYS)) for _ in range(ops // HOT_KEYS)]
    clients = [_client(stack) for _ in range(HOT_CLIENTS)]
    started = time.time()

    def send(index: int) -> str:
        return clients[index % HOT_CLIENTS].submit(bodies[index], retry=True)[0]

    with ThreadPoolExecutor(HOT_CLIENTS) as pool:
        job_ids = list(pool.map(send, range(len(bodies))))
    finished = max(clients[0].finished_at(job_id) for job_id in job_ids)
    return len(bodies) * HOT_KEYS / (finished - started)


def raw_floor(dsn: str, ops: int) -> float:
    """Baseline (a): the same upserts, psycopg executemany, 500 per transaction, one process."""
    prefix = f"raw-{_tag()}"
    rows = [
        ("bench", "item", f"{prefix}-{i}", orjson.dumps(document(i)).decode()) for i in range(ops)
    ]
    with psycopg.connect(dsn) as conn:
        conn.execute(table_ddl(RAW_TABLE))
        conn.execute(f"TRUNCATE {RAW_TABLE}")
        conn.commit()
        upsert = upsert_sql(RAW_TABLE)
        started = time.perf_counter()
        for start in range(0, ops, RAW_BATCH):
            with conn.cursor() as cur:
                cur.executemany(upsert, rows[start : start + RAW_BATCH])
            conn.commit()
        return ops / (time.perf_counter() - started)


def sequential_puts(stack: Stack, count: int) -> float:
    """Baseline (b): one client, one PUT at a time over HTTP (a bounded sample)."""
    client = _client(stack)
    prefix = f"seq-{_tag()}"
    client.put("seq", f"{prefix}-warm", document(0))
    started = time.perf_counter()
    for i in range(count):
        status = client.put("seq", f"{prefix}-{i}", document(i))
        if status not in (200, 201):  # 200: a retried PUT after a reset connection
            raise RuntimeError(f"sequential PUT answered {status}")
    return count / (time.perf_counter() - started)


def naive_rate(stack: Stack, actor: Any, ops: int) -> float:
    """Baseline (c): one message and one transaction per upsert, until all are applied."""
    prefix = f"naive-{_tag()}"
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE bench_naive")
        started = time.time()
        for i in range(ops):
            actor.send("item", f"{prefix}-{i}", document(i))
        deadline = time.monotonic() + 600
        while True:
            row = conn.execute(
                "SELECT count(*), extract(epoch FROM max(updated_at)) FROM bench_naive"
            ).fetchone()
            assert row is not None
            if row[0] >= ops:
                return ops / (float(row[1]) - started)
            if time.monotonic() > deadline:
                raise RuntimeError(f"naive baseline applied only {row[0]} of {ops}")
            time.sleep(0.02)


def throughput(stack: Stack, cfg: Config, log: Callable[[str], None]) -> list[Metric]:
    from bench.naive import TABLE, declare, make_broker

    n = cfg.throughput_ops
    raw = Metric("throughput", "raw executemany floor", "ops/s", size=n)
    seq = Metric("throughput", "sequential PUTs, 1 client", "ops/s", size=cfg.sequential_puts)
    for _ in range(cfg.reps):
        seq.samples.append(sequential_puts(stack, cfg.sequential_puts))
    log(f"  sequential PUTs {seq.median:,.0f} ops/s")
    metrics = [raw, seq]

    namespace = f"{stack.namespace}:naive"
    broker = make_broker(REDIS_URL, namespace)
    actor = declare(broker, None)
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        conn.execute(table_ddl(TABLE))
    naive_env = {
        "BENCH_NAIVE_REDIS": REDIS_URL,
        "BENCH_NAIVE_NAMESPACE": namespace,
        "BENCH_NAIVE_DSN": stack.dsn,
    }
    for workers in cfg.workers:
        stack.start_workers(workers)
        warm(_client(stack))
        spread = Metric("throughput", f"e2e spread keys, {workers} workers", "ops/s", size=n)
        hot = Metric("throughput", f"e2e 100 hot keys, {workers} workers", "ops/s", size=n)
        # The floor beside each bulkapi run, not in a block before them: on a shared
        # machine the speed drifts within minutes, and a ratio of figures taken a minute
        # apart measured the drift as much as bulkapi.
        for _ in range(cfg.reps):
            raw.samples.append(raw_floor(stack.dsn, n))
            spread.samples.append(e2e_spread(stack, n))
            hot.samples.append(e2e_hot(stack, n))
        stack.stop_workers()
        naive = Metric(
            "throughput", f"naive msg-per-op, {workers} workers", "ops/s", size=cfg.naive_ops
        )
        proc = stack.start_naive_workers(workers, naive_env)
        for _ in range(cfg.reps):
            naive.samples.append(naive_rate(stack, actor, cfg.naive_ops))
        proc.stop()
        log(
            f"  {workers} workers: spread {spread.median:,.0f}, hot {hot.median:,.0f}, "
            f"naive {naive.median:,.0f} ops/s; raw floor {raw.median:,.0f} ops/s"
        )
        metrics += [spread, hot, naive]
    broker.close()
    return metrics


# --- case 3: single-resource PUT under wrk ----------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(url: str, path_prefix: str, seconds: int, key: str | None) -> dict[str, float]:
    """wrk with the PUT script, 2 threads x 16 connections (the servers' thread count)."""
    argv = [
        "wrk",
        "-t2",
        f"-c{WEB_THREADS}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "put.lua"),
        url,
        "--",
        path_prefix,
        _tag(),
    ]
    if key:
        argv.append(key)
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    text = out.stdout
    if out.returncode != 0:
        raise RuntimeError(f"wrk against {url} exited {out.returncode}:\n{text}{out.stderr}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    if bad or errors:
        raise RuntimeError(f"wrk against {url} saw failures:\n{text}")
    return {"rps": rps, "p50": p50, "p99": p99}


def single_put(stack: Stack, cfg: Config, log: Callable[[str], None]) -> list[Metric]:
    """bulkapi PUT vs the Flask + psycopg CRUD baseline, alternating runs, same gunicorn
    shape, no bulkapi workers running."""
    stack.stop_workers()
    crud, crud_url = stack.start_crud()
    targets = {
        "bulkapi": (stack.api_url, "/v1/resources/wrk/", stack.key),
        CRUD: (crud_url, "/crud/wrk/", None),
    }
    metrics: dict[tuple[str, str], Metric] = {}
    for name, (url, prefix, key) in targets.items():
        run_wrk(url, prefix, 2, key)  # warm-up
        metrics[(name, "rps")] = Metric("single PUT", f"PUT req/s {name}", "req/s")
        metrics[(name, "p50")] = Metric("single PUT", f"PUT p50 {name}", "ms")
        metrics[(name, "p99")] = Metric("single PUT", f"PUT p99 {name}", "ms")
    for _ in range(cfg.reps):
        for name, (url, prefix, key) in targets.items():
            result = run_wrk(url, prefix, cfg.wrk_seconds, key)
            for field, value in result.items():
                metrics[(name, field)].samples.append(value)
    crud.stop()
    log(
        f"  PUT {metrics[('bulkapi', 'rps')].median:,.0f} req/s "
        f"(p99 {metrics[('bulkapi', 'p99')].median:.1f} ms) vs Flask + psycopg "
        f"{metrics[(CRUD, 'rps')].median:,.0f} req/s (p99 {metrics[(CRUD, 'p99')].median:.1f} ms)"
        f", {WEB_PROCESSES} processes x {WEB_THREADS} threads each"
    )
    return list(metrics.values())


# --- case 4: growth ---------------------------------------------------------------------


def e2e_job_set(stack: Stack, size: int) -> float:
    """Seconds from the first byte to the last job terminal, ``size`` fresh-key upserts
    sent as requests of at most 100,000 operations by one client."""
    client = _client(stack)
    prefix = f"grow-{_tag()}"
    bodies = [
        ndjson_body(upserts(prefix, min(MAX_REQUEST_OPS, size - start), size, start))
        for start in range(0, size, MAX_REQUEST_OPS)
    ]
    started = time.time()
    job_ids = [client.submit(body)[0] for body in bodies]
    return max(client.finished_at(job_id) for job_id in job_ids) - started


def growth(stack: Stack, cfg: Config, log: Callable[[str], None]) -> list[Metric]:
    if stack.worker_count != 2:
        stack.start_workers(2)
    warm(_client(stack))
    metrics: list[Metric] = []
    for size in cfg.growth_sizes:
        reps = 1 if size > MAX_REQUEST_OPS else cfg.reps
        seconds = [e2e_job_set(stack, size) for _ in range(reps)]
        label = _label(size)
        metrics += [
            Metric("growth", f"growth {label} end-to-end", "s", seconds, size=size),
            Metric(
                "growth",
                f"growth {label} µs/op",
                "µs/op",
                [s / size * 1e6 for s in seconds],
                size=size,
            ),
            Metric(
                "growth", f"growth {label} ops/s", "ops/s", [size / s for s in seconds], size=size
            ),
        ]
        log(f"  growth {label}: {statistics.median(seconds):.2f} s")
    return metrics
