"""``GET /metrics``: Prometheus gauges read from the database at scrape time.

Every value comes from the database, the one place that knows the whole service, so any
API process (behind any load balancer) answers the same truth, and nothing needs
prometheus_client's multiprocess mode. Per-process request counters are left out on
purpose: scraped through a load balancer they would describe whichever gunicorn process
answered (see "Monitoring" in docs/operations.md for what to use instead).

A scrape never fails and never hangs because of the database: the read runs on a
helper thread and the scrape waits for it at most ``READ_TIMEOUT_SECONDS``; past that,
or on any error, it answers 200 with ``bulkapi_database_up 0`` and without the gauges
it could not read. Concurrent scrapes share the read in flight, so however often
``/metrics`` is called, a process keeps at most one metrics read on the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Response, current_app, request
from flask.blueprints import BlueprintSetupState
from flask_smorest import Blueprint
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import Engine

from bulkapi import __version__
from bulkapi.api.documented import problems
from bulkapi.config import Settings
from bulkapi.runtime import Runtime
from bulkapi.store.database import reading, utcnow
from bulkapi.store.stats import Stats, read_stats

logger = logging.getLogger(__name__)

#: Longest a scrape waits for the database (Prometheus' default scrape timeout is 10 s);
#: on PostgreSQL also each statement's timeout.
READ_TIMEOUT_SECONDS = 5.0
#: ``bulkapi_failed_effects_last_5m`` counts effects that gave up within this window.
FAILED_EFFECTS_WINDOW = timedelta(minutes=5)

_EXTENSION = "bulkapi.metrics"

blp = Blueprint(
    "metrics", __name__, description="Prometheus metrics: backlog, open jobs, side effects."
)


@dataclass(frozen=True, slots=True)
class Reading:
    stats: Stats
    #: When the reading started: ages are measured from here.
    at: datetime
    #: How long the queries took.
    seconds: float


class _Attempt:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.reading: Reading | None = None


class SharedRead:
    """One database read at a time per process: callers arriving while a read is in
    flight wait for that one; nobody waits longer than ``timeout``.

    The read runs on a daemon thread, so a database that never answers (a host that drops
    packets, a full pool, a locked SQLite file) costs the scrape ``timeout``, and later
    scrapes join the stuck read instead of piling new connections onto the database.
    """

    def __init__(self, read: Callable[[], Reading], timeout: float) -> None:
        self._read = read
        self._timeout = timeout
        self._lock = threading.Lock()
        self._current: _Attempt | None = None

    def __call__(self) -> Reading | None:
        with self._lock:
            attempt = self._current
            if attempt is None:
                attempt = self._current = _Attempt()
                threading.Thread(
                    target=self._run, args=(attempt,), name="bulkapi-metrics", daemon=True
                ).start()
        if not attempt.done.wait(self._timeout):
            logger.warning("metrics: the database did not answer within %ss", self._timeout)
            return None
        return attempt.reading

    def _run(self, attempt: _Attempt) -> None:
        try:
            attempt.reading = self._read()
        except Exception as error:
            logger.warning(
                "metrics: could not read the database: %s: %s", type(error).__name__, error
            )
        finally:
            with self._lock:
                self._current = None
            attempt.done.set()


class BulkapiCollector:
    """The gauges of one deployment, read from its database at each collection."""

    def __init__(
        self, engine: Engine, settings: Settings, timeout: float = READ_TIMEOUT_SECONDS
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._timeout = timeout
        self._read = SharedRead(self._read_database, timeout)

    def _read_database(self) -> Reading:
        started, at = time.monotonic(), utcnow()
        with reading(self._engine) as conn:
            stats = read_stats(conn, at - FAILED_EFFECTS_WINDOW, statement_timeout=self._timeout)
        return Reading(stats, at, time.monotonic() - started)

    def collect(self) -> Iterator[Metric]:
        settings = self._settings
        yield InfoMetricFamily(
            "bulkapi_build",
            "The bulkapi version this process runs, and its mode.",
            value={
                "version": __version__,
                "mode": "embedded" if settings.embedded else "production",
            },
        )
        yield _gauge(
            "bulkapi_partitions", "Partitions this process is configured with.", settings.partitions
        )
        reading = self._read()
        yield _gauge(
            "bulkapi_database_up",
            "1 if this scrape read the gauges below from the database, else 0 (they are then "
            "left out).",
            0 if reading is None else 1,
        )
        if reading is not None:
            yield from _database_gauges(reading)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _age(now: datetime, since: datetime | None) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())


def _database_gauges(reading: Reading) -> Iterator[Metric]:
    stats = reading.stats
    yield _gauge(
        "bulkapi_metrics_database_read_seconds",
        "How long this scrape's database queries took.",
        reading.seconds,
    )
    yield _gauge(
        "bulkapi_pending_operations",
        "Accepted bulk operations not applied yet (the backlog), all tenants.",
        stats.pending_operations,
    )
    yield _gauge(
        "bulkapi_pending_operations_max_partition",
        "The largest backlog of a single partition.",
        stats.max_partition_pending,
    )
    yield _gauge(
        "bulkapi_partitions_with_pending_operations",
        "Partitions that have at least one pending operation.",
        stats.partitions_with_pending,
    )
    yield _gauge(
        "bulkapi_oldest_pending_operation_age_seconds",
        "Seconds since the job of the oldest pending operation was accepted; 0 if none.",
        _age(reading.at, stats.oldest_pending_accepted_at),
    )
    jobs = GaugeMetricFamily(
        "bulkapi_open_jobs", "Jobs not finished yet, by status.", labels=["status"]
    )
    for status, count in stats.open_jobs.items():
        jobs.add_metric([status], count)
    yield jobs
    yield _gauge(
        "bulkapi_pending_effects",
        "Side effects waiting to run or to be retried.",
        stats.pending_effects,
    )
    yield _gauge(
        "bulkapi_oldest_due_effect_age_seconds",
        "Seconds the longest-waiting pending side effect has been due; 0 if none is due.",
        _age(reading.at, stats.earliest_effect_due_at),
    )
    yield _gauge(
        "bulkapi_failed_effects_last_5m",
        "Side effects that gave up (status failed) in the last 5 minutes.",
        stats.failed_effects,
    )


def metrics_registry(runtime: Runtime, timeout: float = READ_TIMEOUT_SECONDS) -> CollectorRegistry:
    """A private registry (not prometheus_client's global one: a process, a test run in
    particular, may hold several apps)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BulkapiCollector(runtime.engine, runtime.settings, timeout))
    return registry


@blp.record
def _set_up(state: BlueprintSetupState) -> None:
    state.app.extensions[_EXTENSION] = metrics_registry(state.app.extensions["bulkapi"])


_DESCRIPTION = (
    "Prometheus text exposition format (OpenMetrics when the Accept header asks for it). "
    "Always 200: when the database cannot be read, `bulkapi_database_up` is 0."
)


@blp.route("/metrics", methods=["GET"])
@blp.response(200, {"type": "string"}, content_type="text/plain", description=_DESCRIPTION)
@blp.doc(operationId="getMetrics", security=[])
@problems(blp, authenticated=False)
def metrics() -> Response:
    """Backlog, open jobs and side effects, read from the database (Prometheus format)."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encode(current_app.extensions[_EXTENSION])
    return Response(body, status=200, content_type=content_type)
