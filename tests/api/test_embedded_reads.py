"""Embedded mode: reads never queue behind SQLite's single writer.

A drain batch (or an admission, or a sync write) holds SQLite's write lock for its whole
transaction. Status reads, long polls, event streams, health checks and scrapes only
read, so under WAL they must answer while that lock is held, not after it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import Service, embedded_service
from tests.support import WAIT_SECONDS


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp: Path = tmp_path_factory.mktemp("embedded-reads")
    yield from embedded_service(tmp)


READS = [
    "/v1/jobs/{job}",
    "/v1/jobs/{job}/results",
    "/v1/jobs",
    "/v1/resources/lead/r-1",
    "/v1/resources/lead",
    "/readyz",
    "/metrics",
]


@pytest.mark.parametrize("path", READS)
def test_reads_answer_while_a_writer_holds_the_database(embedded: Service, path: str) -> None:
    tenant = f"reader-{uuid.uuid4().hex[:8]}"
    api = embedded.api(tenant)
    job = api.submit([{"op": "upsert", "type": "lead", "id": "r-1", "data": {"n": 1}}])
    api.wait_job(job["id"])
    fresh = embedded.api(tenant)  # a second key, not cached yet: authenticating reads too
    answered = threading.Event()
    statuses: list[int] = []

    def read() -> None:
        statuses.append(fresh.get(path.format(job=job["id"])).status_code)
        answered.set()

    with embedded.runtime.engine.begin() as writer:  # BEGIN IMMEDIATE: the write lock
        writer.execute(text("UPDATE resources SET updated_at = updated_at WHERE 0"))
        reader = threading.Thread(target=read)
        reader.start()
        answered_under_lock = answered.wait(WAIT_SECONDS)
    reader.join(timeout=WAIT_SECONDS * 2)
    assert answered_under_lock, f"GET {path} waited for the writer to commit"
    assert statuses == [200]
