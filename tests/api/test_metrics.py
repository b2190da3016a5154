"""``GET /metrics``: Prometheus gauges read from the database at scrape time.

The service is shared with other tests, so the gauges are compared before and after
this test's own work, while everything that could change them is held still (drains and
effect runners held: nothing else leaves or enters ``pending``). The collector is also
run alone against databases that refuse connections or never answer.
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text

from bulkapi import __version__
from bulkapi.api.app import create_app
from bulkapi.api.documented import TRANSPORT
from bulkapi.api.metrics import BulkapiCollector, Reading, SharedRead
from bulkapi.config import Settings
from bulkapi.dispatch.effects import EFFECTS_LOCK_SPACE
from bulkapi.runtime import Runtime
from bulkapi.store.database import make_engine
from bulkapi.store.stats import Stats
from tests.api.conftest import drains_held, ids_in_distinct_partitions
from tests.conftest import InProcessApi, Service
from tests.support import free_port, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

#: Gauges that exist only when the database was read.
DATABASE_GAUGES = {
    "bulkapi_metrics_database_read_seconds",
    "bulkapi_pending_operations",
    "bulkapi_pending_operations_max_partition",
    "bulkapi_partitions_with_pending_operations",
    "bulkapi_oldest_pending_operation_age_seconds",
    "bulkapi_open_jobs",
    "bulkapi_pending_effects",
    "bulkapi_oldest_due_effect_age_seconds",
    "bulkapi_failed_effects_last_5m",
}


def _samples(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def scrape(service: Service) -> Samples:
    response = service.anonymous().get("/metrics")
    assert response.status_code == 200, response.data
    samples = _samples(response.get_data(as_text=True))
    assert _value(samples, "bulkapi_database_up") == 1
    return samples


@contextmanager
def effects_held(service: Service) -> Iterator[None]:
    """No side effect runs (use inside ``drains_held``, whose embedded workers are the
    effect runners too): production takes every partition's effects lock in a session."""
    if service.mode == "embedded":
        yield
        return
    with service.runtime.engine.connect() as conn:
        for partition in range(service.runtime.settings.partitions):
            conn.execute(select(func.pg_advisory_lock(EFFECTS_LOCK_SPACE, partition)))
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock_all()"))
            conn.commit()


def _effect_statuses(api: InProcessApi, rid: str) -> list[str]:
    response = api.get(f"/v1/resources/recorded/{rid}/effects")
    assert response.status_code == 200, response.get_json()
    return [effect["status"] for effect in response.get_json()["items"]]


# --- the endpoint -------------------------------------------------------------------


def test_metrics_answer_prometheus_text_without_a_key(service: Service) -> None:
    response = service.anonymous().get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = _samples(response.get_data(as_text=True))
    assert _value(samples, "bulkapi_database_up") == 1
    assert _names(samples) >= DATABASE_GAUGES
    assert set(samples) >= {
        ("bulkapi_open_jobs", frozenset({("status", "queued")})),
        ("bulkapi_open_jobs", frozenset({("status", "processing")})),
    }
    mode = "embedded" if service.mode == "embedded" else "production"
    assert _value(samples, "bulkapi_build_info", version=__version__, mode=mode) == 1
    assert _value(samples, "bulkapi_partitions") == service.runtime.settings.partitions
    for key, value in samples.items():
        assert isinstance(value, float), key
        assert math.isfinite(value) and value >= 0, (key, value)


def test_metrics_ignore_credentials_even_wrong_ones(service: Service) -> None:
    response = service.anonymous().get("/metrics", headers={"Authorization": "Bearer bk_wrong"})
    assert response.status_code == 200
    assert _value(_samples(response.get_data(as_text=True)), "bulkapi_database_up") == 1


def test_metrics_speak_openmetrics_when_asked(service: Service) -> None:
    response = service.anonymous().get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status_code == 200
    assert response.mimetype == "application/openmetrics-text"
    body = response.get_data(as_text=True)
    assert body.endswith("# EOF\n")
    names = {family.name for family in openmetrics_families(body)}
    assert {"bulkapi_build", "bulkapi_database_up", "bulkapi_pending_operations"} <= names


def test_pending_operations_rise_by_a_held_jobs_operations_and_fall_once_it_drains(
    service: Service, api: InProcessApi
) -> None:
    rids = ids_in_distinct_partitions(service, api, "gauge", 3)
    with drains_held(service):
        before = scrape(service)
        job = api.submit([{"op": "upsert", "type": "gauge", "id": rid, "data": {}} for rid in rids])
        held = scrape(service)
    pending = "bulkapi_pending_operations"
    assert _value(held, pending) - _value(before, pending) == len(rids)
    assert _value(held, "bulkapi_partitions_with_pending_operations") >= len(rids)
    assert 1 <= _value(held, "bulkapi_pending_operations_max_partition") <= _value(held, pending)
    open_jobs = sum(_value(held, "bulkapi_open_jobs", status=s) for s in ("queued", "processing"))
    assert open_jobs >= 1
    assert _value(held, "bulkapi_oldest_pending_operation_age_seconds") >= 0

    assert api.wait_job(job["id"])["status"] == "succeeded"
    # Nothing adds work meanwhile; other tests' leftovers can only drain too.
    assert _value(scrape(service), pending) <= _value(held, pending) - len(rids)


def test_pending_effects_count_a_held_effect_until_it_runs(
    service: Service, api: InProcessApi
) -> None:
    with drains_held(service), effects_held(service):
        before = scrape(service)
        assert api.put("/v1/resources/recorded/metered", json={"n": 1}).status_code == 201
        held = scrape(service)
    assert _value(held, "bulkapi_pending_effects") - _value(before, "bulkapi_pending_effects") == 1
    assert _value(held, "bulkapi_oldest_due_effect_age_seconds") >= 0

    wait_until(lambda: _effect_statuses(api, "metered") == ["succeeded"], what="the effect")
    after = scrape(service)
    assert _value(after, "bulkapi_pending_effects") <= _value(held, "bulkapi_pending_effects") - 1


def test_an_effect_that_gives_up_is_counted_as_failed(service: Service, api: InProcessApi) -> None:
    written = api.put("/v1/resources/recorded/doomed", json={"effect_fails": "always"})
    assert written.status_code == 201
    wait_until(lambda: _effect_statuses(api, "doomed") == ["failed"], what="the effect to fail")
    assert _value(scrape(service), "bulkapi_failed_effects_last_5m") >= 1


def test_metrics_are_documented_as_text_without_security(service: Service) -> None:
    document = service.anonymous().get("/openapi.json").get_json()
    operation = document["paths"]["/metrics"]["get"]
    assert operation["security"] == []
    # Besides its answer, only what the HTTP server itself may answer any request.
    assert set(operation["responses"]) == {"200", *(str(status) for status in TRANSPORT)}
    assert "text/plain" in operation["responses"]["200"]["content"]


# --- the collector alone --------------------------------------------------------------


def _collect(collector: BulkapiCollector) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    return _samples(generate_latest(registry).decode())


def _assert_database_down(samples: Samples) -> None:
    assert _value(samples, "bulkapi_database_up") == 0
    assert not _names(samples) & DATABASE_GAUGES, "gauges it could not read are left out"
    assert _value(samples, "bulkapi_build_info", version=__version__, mode="embedded") == 1


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"postgresql://bulkapi@127.0.0.1:{free_port()}/bulkapi", id="closed-port"),
        pytest.param("sqlite:////nonexistent-bulkapi-dir/bulkapi.db", id="unopenable-sqlite"),
    ],
)
def test_an_unreachable_database_reads_as_down(url: str) -> None:
    engine = make_engine(url)
    try:
        _assert_database_down(_collect(BulkapiCollector(engine, Settings(database_url=url))))
    finally:
        engine.dispose()


def test_metrics_answer_200_with_database_down_when_the_database_is_unreachable() -> None:
    url = f"postgresql://bulkapi@127.0.0.1:{free_port()}/bulkapi"
    runtime = Runtime(Settings(database_url=url))
    try:
        response = create_app(runtime).test_client().get("/metrics")
        assert response.status_code == 200
        _assert_database_down(_samples(response.get_data(as_text=True)))
    finally:
        runtime.stop()


def test_a_database_that_never_answers_reads_as_down_instead_of_hanging() -> None:
    """A server that accepts the connection and then says nothing: the scrape gives up
    after the collector's timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever answers
        url = f"postgresql://bulkapi@127.0.0.1:{silent.getsockname()[1]}/bulkapi"
        engine = make_engine(url)
        try:
            collector = BulkapiCollector(engine, Settings(database_url=url), timeout=0.2)
            _assert_database_down(_collect(collector))
        finally:
            silent.close()  # the stuck read now fails and its thread ends
            engine.dispose()


def _reading() -> Reading:
    stats = Stats(0, 0, 0, None, {"queued": 0, "processing": 0}, 0, None, 0)
    return Reading(stats, datetime.now(UTC), 0.0)


def test_scrapes_during_a_stuck_read_join_it_instead_of_starting_more() -> None:
    release = threading.Event()
    calls: list[int] = []

    def read() -> Reading:
        calls.append(1)
        release.wait()
        return _reading()

    shared = SharedRead(read, timeout=0.05)
    assert shared() is None
    assert shared() is None
    assert len(calls) == 1
    release.set()
    assert wait_until(shared, what="a reading") is not None
    assert shared() is not None
    assert len(calls) >= 2, "a finished read is never served again"


def test_a_failed_read_is_down_and_the_next_scrape_reads_again() -> None:
    outcomes: list[Exception | None] = [RuntimeError("database away"), None]

    def read() -> Reading:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return _reading()

    shared = SharedRead(read, timeout=30)
    assert shared() is None
    assert shared() is not None
    assert outcomes == []
