"""Summaries, the printed tables, the targets, results.json and the plot."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Metric:
    case: str
    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    #: Sizes in operations, for the plot (None when the metric has no size).
    size: int | None = None
    #: A latency distribution: the table shows p50 and p99 of all samples.
    distribution: bool = False

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples)
        if len(ordered) == 1:
            return ordered[0]
        rank = q * (len(ordered) - 1)
        low = int(rank)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "case": self.case,
            "name": self.name,
            "unit": self.unit,
            "n": len(self.samples),
            "median": self.median,
            "min": min(self.samples),
            "max": max(self.samples),
            "samples": self.samples,
        }
        if self.size is not None:
            out["size"] = self.size
        if self.distribution:
            out["p50"] = self.percentile(0.50)
            out["p99"] = self.percentile(0.99)
        return out


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(metrics: list[Metric]) -> str:
    rows = [("case", "metric", "median", "min..max", "p99", "n", "unit")]
    for m in metrics:
        p99 = _fmt(m.percentile(0.99)) if m.distribution else ""
        rows.append(
            (
                m.case,
                m.name,
                _fmt(m.median),
                f"{_fmt(min(m.samples))}..{_fmt(max(m.samples))}",
                p99,
                str(len(m.samples)),
                m.unit,
            )
        )
    return _markdown(rows, right=(2, 3, 4, 5))


@dataclass(frozen=True)
class Target:
    name: str
    #: The figure held to the bound: a ratio to the baseline, or an absolute value.
    measured: float
    bound: float
    #: "<=" or ">=".
    op: str
    unit: str
    #: bulkapi's figure and the baseline's, as printed (empty: an absolute target).
    subject: str = ""
    baseline: str = ""

    @property
    def met(self) -> bool:
        return self.measured <= self.bound if self.op == "<=" else self.measured >= self.bound

    def line(self) -> str:
        state = "MET " if self.met else "MISS"
        target = f"target {self.op} {_fmt(self.bound)}"
        versus = f" [{self.subject} vs {self.baseline}]" if self.baseline else ""
        return f"{state} {self.name}: {_fmt(self.measured)} {self.unit} ({target}){versus}"


def target_table(goals: list[Target]) -> str:
    """The targets as a Markdown table: each figure beside its baseline, ratio, verdict."""
    rows = [("target", "bulkapi", "baseline (same run)", "measured", "bound", "")]
    for t in goals:
        rows.append(
            (
                t.name,
                t.subject,
                t.baseline or "-",
                f"{_fmt(t.measured)} {t.unit}",
                f"{t.op} {_fmt(t.bound)} {t.unit}",
                "MET" if t.met else "MISS",
            )
        )
    return _markdown(rows, right=(3, 4))


def _markdown(rows: Sequence[tuple[str, ...]], right: tuple[int, ...]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if number == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


#: The sync PUT baseline's name in metric names (bench/crud.py).
CRUD = "Flask + psycopg"
#: Worker processes the bulk targets are stated for.
_WORKERS = 2


def targets(metrics: list[Metric]) -> list[Target]:
    """The performance targets, from whatever this run measured (2 worker processes)."""
    by = {m.name: m for m in metrics}
    out: list[Target] = []

    def have(*names: str) -> bool:
        return all(name in by for name in names)

    def fig(name: str) -> str:
        return f"{_fmt(by[name].median)} {by[name].unit}"

    def ratio(
        name: str, ours: str, theirs: str, bound: float, unit: str, *, op: str = ">="
    ) -> None:
        """ours / theirs, as a factor (unit "x") or a percentage ("%")."""
        if have(ours, theirs):
            value = by[ours].median / by[theirs].median * (100 if unit == "%" else 1)
            out.append(Target(name, value, bound, op, unit, fig(ours), fig(theirs)))

    def absolute(name: str, value: float, bound: float, unit: str) -> None:
        out.append(Target(name, value, bound, "<=", unit, f"{_fmt(value)} {unit}"))

    rps, p99 = f"PUT req/s {CRUD}", f"PUT p99 {CRUD}"
    ratio("sync PUT req/s / Flask + psycopg", "PUT req/s bulkapi", rps, 0.70, "x")
    ratio("sync PUT p99 / Flask + psycopg p99", "PUT p99 bulkapi", p99, 2.0, "x", op="<=")
    spread = f"e2e spread keys, {_WORKERS} workers"
    hot = f"e2e 100 hot keys, {_WORKERS} workers"
    ratio("bulk spread keys / executemany floor", spread, "raw executemany floor", 40, "%")
    ratio("bulk 100 hot keys / spread keys", hot, spread, 50, "%")
    for fmt in ("json", "ndjson"):
        if have(f"admission {fmt} 1k"):
            latency = by[f"admission {fmt} 1k"]
            absolute(f"admission 1k p50 ({fmt})", latency.percentile(0.5), 25, "ms")
            absolute(f"admission 1k p99 ({fmt})", latency.percentile(0.99), 60, "ms")
    if have("admission ndjson 100k"):
        seconds = by["admission ndjson 100k"].median / 1000
        absolute("admission 100k NDJSON", seconds, 2, "s")
    if have("API peak RSS, 100k admission"):
        peak = by["API peak RSS, 100k admission"].median
        absolute("API peak RSS, 100k NDJSON admission", peak, 200, "MB")
    ratio("embedded 100k job / SQLite floor", "embedded e2e", "SQLite executemany floor", 5, "%")
    if have("embedded 100k job end-to-end"):
        seconds = by["embedded 100k job end-to-end"].median
        absolute("embedded 100k job, submit to finished", seconds, 6, "s")
    effects, writes = "effects run, from first byte", "e2e writes, no effects"
    ratio("effects/s / writes/s without effects", effects, writes, 0.5, "x")
    for size in ("100k", "1M"):
        per_op = f"growth {size} µs/op"
        ratio(f"cost per op {size} / 10k", per_op, "growth 10k µs/op", 1.5, "x", op="<=")
    ratio("bulk spread keys / sequential PUTs", spread, "sequential PUTs, 1 client", 20, "x")
    naive = f"naive msg-per-op, {_WORKERS} workers"
    ratio("bulk spread keys / naive msg-per-op", spread, naive, 5, "x")
    return out


def write_json(
    path: Path,
    meta: dict[str, Any],
    metrics: list[Metric],
    goals: list[Target],
    extra: dict[str, Any],
) -> None:
    document = {
        "meta": meta,
        "metrics": [m.summary() for m in metrics],
        "targets": [
            {
                "name": t.name,
                "measured": t.measured,
                "bound": t.bound,
                "op": t.op,
                "unit": t.unit,
                "bulkapi": t.subject,
                "baseline": t.baseline,
                "met": t.met,
            }
            for t in goals
        ],
        **extra,
    }
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


def plot(path: Path, metrics: list[Metric]) -> None:
    """Three panels: admission latency vs size, e2e throughput vs size, throughput vs baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    for fmt in ("json", "ndjson"):
        points = sorted(
            (m.size, m.percentile(0.5), m.percentile(0.99))
            for m in metrics
            if m.name.startswith(f"admission {fmt} ") and m.size
        )
        if points:
            sizes, p50, p99 = zip(*points, strict=True)
            ax.plot(sizes, p50, "o-", label=f"{fmt} p50")
            ax.plot(sizes, p99, "x--", label=f"{fmt} p99")
            ax.legend()
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="operations per request",
        ylabel="ms",
        title="Admission latency (POST /v1/bulk → 202)",
    )
    ax.grid(True, which="both", alpha=0.3)

    ax = axes[1]
    growth = sorted(
        (m.size, m.median, min(m.samples), max(m.samples))
        for m in metrics
        if m.name.startswith("growth ") and m.unit == "ops/s" and m.size
    )
    if growth:
        sizes, med, lo, hi = zip(*growth, strict=True)
        ax.errorbar(
            sizes,
            med,
            yerr=[
                [a - b for a, b in zip(med, lo, strict=True)],
                [b - a for a, b in zip(med, hi, strict=True)],
            ],
            fmt="o-",
            capsize=4,
            label="bulkapi e2e, 2 workers",
        )
    for m in metrics:
        if m.name == "raw executemany floor":
            ax.axhline(m.median, color="grey", linestyle="--", label="raw executemany floor")
    ax.set(
        xscale="log",
        xlabel="operations in the job",
        ylabel="ops/s",
        title="End-to-end throughput vs size",
    )
    ax.grid(True, which="both", alpha=0.3)
    if growth:
        ax.legend()

    ax = axes[2]
    bars = [m for m in metrics if m.case == "throughput" and m.unit == "ops/s"]
    if bars:
        ax.barh(
            [m.name for m in bars],
            [m.median for m in bars],
            xerr=[
                [m.median - min(m.samples) for m in bars],
                [max(m.samples) - m.median for m in bars],
            ],
            capsize=3,
        )
        ax.set(xscale="log", xlabel="ops/s (log)", title="Throughput vs baselines")
        ax.invert_yaxis()
        ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
