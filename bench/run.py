"""``python -m bench``: start the services, run the cases, print and save the results.

Cases: admission, throughput (bulk), sync (single PUT), growth, embedded, types (schemas
and side effects); ``--profile`` adds py-spy profiles of the admission and drain paths.
Every target is printed beside the baseline measured in the same run, MET or MISS.
``--quick`` is a short smoke run (about 10 minutes, no 1,000,000-operation point unless
``--million``); the default run takes roughly half an hour and includes that point.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cases import Config, admission, growth, single_put, throughput
from bench.embedded import embedded_case
from bench.report import Metric, plot, table, target_table, targets, write_json
from bench.stack import (
    PG_ADMIN_URL,
    REDIS_URL,
    WEB_PROCESSES,
    WEB_THREADS,
    WORKER_THREADS,
    running_stack,
)
from bench.typed import types_case

HERE = Path(__file__).resolve().parent
CASES = ("admission", "throughput", "sync", "growth", "embedded", "types")
#: The growth point that takes longest (about 2 minutes at 10k ops/s): in the full run,
#: and in a quick run with ``--million``.
MILLION = 1_000_000

FULL = Config(
    reps=3,
    admission_sizes=((1000, 100), (10_000, 10)),
    big_admissions=3,
    workers=(2,),
    throughput_ops=100_000,
    naive_ops=5000,
    sequential_puts=2000,
    wrk_seconds=10,
    growth_sizes=(10_000, 100_000, MILLION),
)
QUICK = Config(
    reps=2,
    admission_sizes=((1000, 20), (10_000, 3)),
    big_admissions=1,
    workers=(2,),
    throughput_ops=20_000,
    naive_ops=1000,
    sequential_puts=300,
    wrk_seconds=3,
    growth_sizes=(10_000, 100_000),
)


def _csv(kind: type, text: str) -> tuple[Any, ...]:
    return tuple(kind(part) for part in text.split(",") if part)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short run: fewer, smaller samples")
    parser.add_argument(
        "--cases",
        type=lambda t: _csv(str, t),
        default=CASES,
        help=f"comma-separated subset of {','.join(CASES)}",
    )
    parser.add_argument(
        "--workers",
        type=lambda t: _csv(int, t),
        default=None,
        help="worker process counts for the throughput case (default 2; targets use 2)",
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions per measurement")
    parser.add_argument(
        "--ops", type=int, default=None, help="operations per throughput run (default 100000)"
    )
    parser.add_argument(
        "--million",
        action="store_true",
        help="add the 1,000,000-operation growth point to a --quick run (the full run has it)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also record py-spy profiles of admission and drain"
    )
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    parser.add_argument("--plot", type=Path, default=HERE / "plot.png")
    args = parser.parse_args(argv)
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    return args


def config(args: argparse.Namespace) -> Config:
    base = QUICK if args.quick else FULL
    million = args.million and MILLION not in base.growth_sizes
    growth_sizes = base.growth_sizes + ((MILLION,) if million else ())
    return Config(
        reps=args.reps or base.reps,
        admission_sizes=base.admission_sizes,
        big_admissions=base.big_admissions,
        workers=args.workers or base.workers,
        throughput_ops=args.ops or base.throughput_ops,
        naive_ops=base.naive_ops,
        sequential_puts=base.sequential_puts,
        wrk_seconds=base.wrk_seconds,
        growth_sizes=growth_sizes,
    )


def log(message: str) -> None:
    print(message, flush=True)


def _stop(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # SIGTERM, and SIGINT even when a shell started us in the background with it ignored,
    # unwind through the context managers: processes stopped, database dropped.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    args = parse(argv)
    cfg = config(args)
    if "sync" in args.cases and shutil.which("wrk") is None:
        log("wrk is needed for the sync case: apt-get install -y wrk (or leave out 'sync')")
        return 2
    logs = Path(tempfile.mkdtemp(prefix="bulkapi-bench-"))
    log(f"bulkapi bench: cases {','.join(args.cases)}; logs in {logs}")
    started = time.monotonic()
    load_before = os.getloadavg()
    metrics: list[Metric] = []
    extra: dict[str, Any] = {}
    with running_stack(logs) as stack:
        runners = {
            "admission": admission,
            "throughput": throughput,
            "sync": single_put,
            "growth": growth,
            "embedded": embedded_case,
            "types": types_case,
        }
        for case in CASES:
            if case not in args.cases:
                continue
            if case in ("admission", "types") and stack.worker_count != 2:
                stack.start_workers(2)
            if case == "embedded":  # its server drains in-process: nothing else running
                stack.stop_workers()
            case_started = time.monotonic()
            log(f"[{case}]")
            metrics += runners[case](stack, cfg, log)
            log(f"  ({time.monotonic() - case_started:.0f} s)")
        if args.profile:
            from bench.profile import profile

            log("[profile]")
            extra["profiles"] = profile(stack, cfg.throughput_ops, log)
    goals = targets(metrics)
    log("")
    log(table(metrics))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    log(f"\nload average {load} at the end ({os.cpu_count()} CPUs): absolute figures drift with it")
    log("")
    log(target_table(goals))
    meta = {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
        "quick": args.quick,
        "config": cfg.__dict__,
        "cpus": os.cpu_count(),
        # Other work on the machine skews absolute figures (ratios less so): say how much.
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "postgres": PG_ADMIN_URL.rsplit("/", 1)[0],
        "redis": REDIS_URL,
        "api": f"gunicorn gthread {WEB_PROCESSES} processes x {WEB_THREADS} threads",
        "worker_threads": WORKER_THREADS,
    }
    write_json(args.output, meta, metrics, goals, extra)
    plot(args.plot, metrics)
    log(f"\nwrote {args.output} and {args.plot} ({time.monotonic() - started:.0f} s)")
    return 0
