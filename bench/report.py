"""Summaries, the printed table, the issue-4 targets, results.json and the plot."""

from __future__ import annotations

import statistics
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i < 2 or i == 6 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if number == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    name: str
    measured: float
    bound: float
    #: "<=" or ">=".
    op: str
    unit: str

    @property
    def met(self) -> bool:
        return self.measured <= self.bound if self.op == "<=" else self.measured >= self.bound

    def line(self) -> str:
        state = "MET " if self.met else "MISS"
        target = f"target {self.op} {_fmt(self.bound)}"
        return f"{state} {self.name}: {_fmt(self.measured)} {self.unit} ({target})"


def targets(metrics: list[Metric]) -> list[Target]:
    """Issue 4's targets, from whatever this run measured (2 worker processes)."""
    by = {m.name: m for m in metrics}
    out: list[Target] = []

    def have(*names: str) -> bool:
        return all(name in by for name in names)

    if have("admission json 1k"):
        lat = by["admission json 1k"]
        out.append(Target("1k-op admission p50 (JSON)", lat.percentile(0.5), 40, "<=", "ms"))
        out.append(Target("1k-op admission p99 (JSON)", lat.percentile(0.99), 100, "<=", "ms"))
    if have("admission ndjson 1k"):
        lat = by["admission ndjson 1k"]
        out.append(Target("1k-op admission p50 (NDJSON)", lat.percentile(0.5), 40, "<=", "ms"))
        out.append(Target("1k-op admission p99 (NDJSON)", lat.percentile(0.99), 100, "<=", "ms"))
    if have("admission ndjson 100k"):
        seconds = by["admission ndjson 100k"].median / 1000
        out.append(Target("100k-op NDJSON admission", seconds, 3, "<=", "s"))
    if have("API peak RSS, 100k admission"):
        out.append(
            Target(
                "API RSS in 100k admission",
                by["API peak RSS, 100k admission"].median,
                300,
                "<=",
                "MB",
            )
        )
    spread, hot = "e2e spread keys, 2 workers", "e2e 100 hot keys, 2 workers"
    if have(spread, "raw executemany floor"):
        ratio = by[spread].median / by["raw executemany floor"].median
        out.append(Target("e2e / raw executemany (a)", ratio * 100, 30, ">=", "%"))
    if have(spread, "sequential PUTs, 1 client"):
        ratio = by[spread].median / by["sequential PUTs, 1 client"].median
        out.append(Target("e2e / sequential PUTs (b)", ratio, 20, ">=", "x"))
    if have(spread, "naive msg-per-op, 2 workers"):
        ratio = by[spread].median / by["naive msg-per-op, 2 workers"].median
        out.append(Target("e2e / naive msg-per-op (c)", ratio, 5, ">=", "x"))
    if have(spread, hot):
        out.append(
            Target(
                "hot keys / spread keys", by[hot].median / by[spread].median * 100, 50, ">=", "%"
            )
        )
    if have("PUT req/s bulkapi", "PUT req/s bare Flask echo"):
        ratio = by["PUT req/s bulkapi"].median / by["PUT req/s bare Flask echo"].median
        out.append(Target("single PUT / bare Flask echo", ratio * 100, 50, ">=", "%"))
    if have("growth 10k µs/op", "growth 100k µs/op"):
        ratio = by["growth 100k µs/op"].median / by["growth 10k µs/op"].median
        out.append(Target("cost/op 100k vs 10k", ratio, 1.5, "<=", "x"))
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
