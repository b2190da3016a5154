"""Where the time goes: py-spy on the API during admissions and on workers during a drain.

py-spy samples the live processes (``--subprocesses`` follows gunicorn's and Dramatiq's
children; idle threads are left out), writes collapsed stacks to ``bench/profiles/``,
and the summary below turns them into shares of samples by function (self and inclusive)
and by package.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.client import ndjson_body, upserts
from bench.stack import Stack

PROFILES = Path(__file__).resolve().parent / "profiles"
#: Samples per second; py-spy's default is 100.
RATE = 250
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    return found


class Recording:
    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [
                _py_spy(),
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                "--format",
                "raw",
                "--rate",
                str(RATE),
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.5)  # attach to every process before the work starts

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _short(frame: str) -> tuple[str, str, str]:
    match = _FRAME.match(frame)
    if not match:
        return frame, "", ""
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return match["func"], path, match["line"] or ""


def _package(path: str) -> str:
    if path.startswith("bulkapi/"):
        return "/".join(path.split("/")[:2])
    if path.startswith(".") or "/" not in path:
        return path.split("/", maxsplit=1)[0] or "?"
    return path.split("/", maxsplit=1)[0] if not path[0].isdigit() else "stdlib"


def summarize(raw: Path, focus: str, top: int = 15) -> dict[str, Any]:
    """Shares of the samples whose stack passes through ``focus`` (a function name).

    Restricting to the request handler or the drain leaves out threads that py-spy does
    not recognise as idle (gthread's pool, Redis consumers); time a thread spends waiting
    for PostgreSQL inside the focus stays in, as psycopg's ``Connection.wait``.
    """
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    total = everything = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        everything += count
        if not any(func == focus for func, _, _ in frames):
            continue
        total += count
        func, path, _ = frames[-1]
        self_time[f"{func} ({path})"] += count
        packages[_package(path)] += count
        for name in {f"{f} ({p})" for f, p, _ in frames if p.startswith("bulkapi/")}:
            inclusive[name] += count
        ours = [(f, p, n) for f, p, n in frames if p.startswith("bulkapi/")]
        if ours:
            f, p, n = ours[-1]
            lines[f"{f} ({p}:{n})"] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "share": round(count / max(total, 1), 4)}
            for name, count in counter.most_common(top)
        ]

    return {
        "focus": focus,
        "samples": total,
        "all_samples": everything,
        "self": share(self_time),
        "inclusive": share(inclusive),
        "bulkapi_lines": share(lines),
        "packages": share(packages),
    }


def render(name: str, summary: dict[str, Any]) -> str:
    lines = [
        f"{name}: {summary['samples']} samples in {summary['focus']} "
        f"(of {summary['all_samples']} non-idle samples)"
    ]
    for title, key in (
        ("by package (self)", "packages"),
        ("self time", "self"),
        ("inclusive, bulkapi functions", "inclusive"),
        ("innermost bulkapi line (self)", "bulkapi_lines"),
    ):
        lines.append(f"  {title}:")
        lines += [f"    {row['share'] * 100:5.1f}%  {row['function']}" for row in summary[key]]
    return "\n".join(lines)


def profile(stack: Stack, ops: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Profile three ``ops``-op NDJSON admissions and a wrk run of single PUTs on the API,
    then one ``ops``-op drain on 2 worker processes."""
    from bench.cases import _client, _tag, run_wrk

    PROFILES.mkdir(exist_ok=True)
    client = _client(stack)
    stack.start_workers(2)
    assert stack.api is not None and stack.workers is not None
    bodies = [ndjson_body(upserts(f"prof-{_tag()}", ops)) for _ in range(3)]

    recording = Recording(stack.api.pid, PROFILES / "admission.txt")
    job_ids = [client.submit(body)[0] for body in bodies]
    recording.stop()
    for job_id in job_ids:
        client.wait_job(job_id)

    recording = Recording(stack.api.pid, PROFILES / "put.txt")
    run_wrk(stack.api_url, "/v1/resources/prof/", 8, stack.key)
    recording.stop()

    body = ndjson_body(upserts(f"prof-{_tag()}", ops))
    recording = Recording(stack.workers.pid, PROFILES / "drain.txt")
    client.wait_job(client.submit(body)[0])
    recording.stop()

    out = {}
    for name, focus in (
        ("admission", "submit"),
        ("put", "put"),
        ("drain", "PartitionDrainer.drain"),
    ):
        out[name] = summarize(PROFILES / f"{name}.txt", focus)
        log(render(name, out[name]))
    return out
