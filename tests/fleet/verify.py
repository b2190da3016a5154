"""What must hold after a fault, read from the database and the recorded answers, and the
timings each fault test reports."""

from __future__ import annotations

import bisect
import statistics
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from bulkapi.store.drain import PARTITION_LOCK_SPACE
from tests.fleet.workload import Answer

#: Seconds one poll of the database may take (it may be restarting).
POLL_TIMEOUT = 3


def _connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, connect_timeout=POLL_TIMEOUT, autocommit=True)


@dataclass
class Monitor:
    """Polls the database during a fault: when the jobs open at the fault were all
    terminal, and when the faulted host last held a partition lock."""

    dsn: str
    fault_at: float
    fault_wall: datetime
    host_address: str
    open_at_fault_done: float | None = None
    host_released: float | None = None
    #: When the server had no session of the faulted host left.
    host_gone: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Monitor:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                with _connect(self.dsn) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM jobs WHERE status IN ('queued', 'processing') "
                        "AND created_at <= %s",
                        (self.fault_wall,),
                    ).fetchone()
                    held = conn.execute(
                        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a "
                        "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.classid = %s "
                        "AND host(a.client_addr) = %s",
                        (PARTITION_LOCK_SPACE, self.host_address),
                    ).fetchone()
                    sessions = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE host(client_addr) = %s",
                        (self.host_address,),
                    ).fetchone()
            except psycopg.Error:  # the database may be restarting: look again
                continue
            now = time.monotonic() - self.fault_at
            if held is not None and held[0] == 0 and self.host_released is None:
                self.host_released = now
            if sessions is not None and sessions[0] == 0 and self.host_gone is None:
                self.host_gone = now
            if row is not None and row[0] == 0 and self.open_at_fault_done is None:
                self.open_at_fault_done = now


def open_jobs(dsn: str) -> int | None:
    try:
        with _connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM jobs WHERE status IN ('queued', 'processing')"
            ).fetchone()
    except psycopg.Error:
        return None
    return None if row is None else int(row[0])


def now_wall() -> datetime:
    return datetime.now(UTC)


@dataclass
class Timings:
    """Latencies of answers sent while a fault was on, to hosts it did not touch."""

    admissions: list[float]
    puts: list[float]

    def line(self) -> str:
        def describe(values: list[float]) -> str:
            if not values:
                return "none"
            return f"n={len(values)} p50={statistics.median(values):.3f}s max={max(values):.3f}s"

        return f"POST /v1/bulk {describe(self.admissions)}; PUT wait=5 {describe(self.puts)}"


def during(answers: list[Answer], start: float, end: float, spared: set[str]) -> list[Answer]:
    """Answered requests sent in [start, end) to the hosts in ``spared``."""
    return [
        a for a in answers if start <= a.started < end and a.host in spared and a.status is not None
    ]


def timings(answers: list[Answer]) -> Timings:
    """Latencies of the answered requests among ``answers``."""
    return Timings(
        [a.latency for a in answers if a.kind == "bulk" and a.status is not None],
        [a.latency for a in answers if a.kind == "put" and a.status is not None],
    )


def bad_5xx(answers: list[Answer]) -> list[Answer]:
    """Every 5xx that is not a 503 with Retry-After."""
    return [
        a
        for a in answers
        if a.status is not None
        and a.status >= 500
        and not (a.status == 503 and a.retry_after is not None)
    ]


@dataclass(frozen=True)
class _Write:
    version: int
    #: When its request was sent and answered; None for a job whose answer never came.
    started: float | None
    finished: float | None


def verify(dsn: str, answers: list[Answer]) -> dict[str, int]:
    """Every check the fault tests share; a summary of what was checked."""
    with _connect(dsn) as conn:
        jobs = conn.execute("SELECT id, status, total FROM jobs").fetchall()
        counted = dict(
            conn.execute("SELECT job_id, sum(succeeded) FROM job_counts GROUP BY job_id").fetchall()
        )
        # An operation's document is kept as its JSON text: decoded here like the resource's.
        rows = conn.execute(
            "SELECT job_id, rid, seq, status, version, data::jsonb, error_code FROM operations"
        ).fetchall()
        stored = {
            rid: (version, data)
            for rid, version, data in conn.execute("SELECT rid, version, data FROM resources")
        }
    by_status: dict[str, Counter[str]] = defaultdict(Counter)
    for job_id, _rid, _seq, status, *_ in rows:
        by_status[job_id][status] += 1
    not_terminal = [job for job in jobs if job[1] != "succeeded"]
    assert not not_terminal, f"{len(not_terminal)} jobs not succeeded: {not_terminal[:5]}"
    wrong_counts = [
        (job_id, total, counted.get(job_id), dict(by_status[job_id]))
        for job_id, _status, total in jobs
        if not (counted.get(job_id) == total == by_status[job_id]["succeeded"])
    ]
    assert not wrong_counts, f"counts differ from results: {wrong_counts[:5]}"
    job_ids = {job[0] for job in jobs}
    answered = {a.job_id for a in answers if a.job_id is not None}
    assert answered <= job_ids, f"202 answers without a job: {answered - job_ids}"

    # Each accepted write to a key, with its version and when its request was in flight.
    writes: dict[str, list[_Write]] = defaultdict(list)
    documents: dict[str, dict[int, Any]] = defaultdict(dict)
    sent_at = {a.job_id: a for a in answers if a.job_id is not None}
    by_seq: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for job_id, rid, seq, _status, version, data, _error in rows:
        answer = sent_at.get(job_id)
        if answer is None:
            writes[rid].append(_Write(version, None, None))
        else:
            writes[rid].append(_Write(version, answer.started, answer.finished))
        documents[rid][version] = data
        by_seq[rid].append((seq, version))
    unknown_puts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in answers:
        if a.kind != "put":
            continue
        if a.version is not None:
            writes[a.keys[0]].append(_Write(a.version, a.started, a.finished))
            documents[a.keys[0]][a.version] = a.data
        elif a.unknown:
            assert a.data is not None
            unknown_puts[a.keys[0]].append(a.data)

    for rid, found in writes.items():
        versions = sorted(w.version for w in found)
        assert len(set(versions)) == len(versions), f"{rid}: a version twice: {versions}"
        version, data = stored[rid]
        missing = set(range(1, version + 1)) - set(versions)
        assert versions[-1] <= version, f"{rid}: stored {version} < written {versions[-1]}"
        assert len(missing) <= len(unknown_puts[rid]), (
            f"{rid}: versions {sorted(missing)} have no write (unknown PUTs: "
            f"{len(unknown_puts[rid])})"
        )
        in_seq = [v for _seq, v in sorted(by_seq[rid])]
        assert in_seq == sorted(in_seq), f"{rid}: bulk versions out of admission order {in_seq}"
        expected = documents[rid].get(version)
        if expected is not None:
            assert data == expected, f"{rid}: stored {data}, not version {version}'s {expected}"
        else:
            assert data in unknown_puts[rid], f"{rid}: stored {data} from no known write"
        _check_real_time_order(rid, found)
    return {
        "jobs": len(jobs),
        "operations": len(rows),
        "puts": sum(1 for a in answers if a.kind == "put" and a.version is not None),
        "unknown": sum(1 for a in answers if a.unknown),
        "keys": len(writes),
    }


def _check_real_time_order(rid: str, found: list[_Write]) -> None:
    """A write answered before another was sent has the lower version: admissions
    commit before their answers, so version order follows admission order."""
    timed = [w for w in found if w.started is not None and w.finished is not None]
    ordered = sorted(timed, key=lambda w: w.finished or 0.0)
    ends = [w.finished or 0.0 for w in ordered]
    highest: list[int] = []
    for w in ordered:
        highest.append(max(w.version, highest[-1] if highest else 0))
    for w in timed:
        before = bisect.bisect_left(ends, w.started or 0.0)
        if before:
            assert highest[before - 1] < w.version, (
                f"{rid}: version {w.version} sent after version {highest[before - 1]} "
                "was answered, yet not above it"
            )
