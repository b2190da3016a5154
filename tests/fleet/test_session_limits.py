"""The session limits every PostgreSQL connection carries, which bound how long a host
that froze or vanished keeps what it locked."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from bulkapi.api.bulk import OVERLAP_FROM
from bulkapi.config import SessionLimits, Settings
from bulkapi.store.database import make_engine
from bulkapi.store.drain import PARTITION_LOCK_SPACE
from tests.support import (
    REDIS_URL,
    WAIT_SECONDS,
    HttpApi,
    migrated_with_key,
    service_env,
    start_server,
    wait_until,
)


def test_session_limits_come_from_the_environment() -> None:
    limits = Settings.from_env(
        {
            "BULKAPI_DB_IDLE_IN_TRANSACTION_TIMEOUT": "3",
            "BULKAPI_DB_DEAD_PEER_TIMEOUT": "4.5",
            "BULKAPI_DB_LOCK_TIMEOUT": "0.5",
            "BULKAPI_DB_STATEMENT_TIMEOUT": "60",
            "BULKAPI_DB_CONNECT_TIMEOUT": "2",
        }
    ).db_sessions
    assert limits == SessionLimits(3.0, 4.5, 0.5, 60.0, 2.0)
    assert Settings().db_sessions == SessionLimits(10.0, 10.0, 5.0, 0.0, 5.0)
    with pytest.raises(ValueError, match="BULKAPI_DB_"):
        Settings.from_env({"BULKAPI_DB_LOCK_TIMEOUT": "-1"})


def test_every_connection_carries_the_limits_and_keeps_the_urls_own_options(
    postgres_url: str,
) -> None:
    url = f"{postgres_url}?options=-c%20lock_timeout%3D7s"  # an operator's override wins
    engine = make_engine(url, limits=SessionLimits(2, 4, 1, 0, 3))
    try:
        with engine.connect() as conn:
            shown = {
                name: conn.execute(text(f"SHOW {name}")).scalar()
                for name in (
                    "idle_in_transaction_session_timeout",
                    "lock_timeout",
                    "statement_timeout",
                    "tcp_user_timeout",
                    "tcp_keepalives_idle",
                    "tcp_keepalives_interval",
                    "tcp_keepalives_count",
                )
            }
    finally:
        engine.dispose()
    assert shown == {
        "idle_in_transaction_session_timeout": "2s",
        "lock_timeout": "7s",
        "statement_timeout": "0",  # 0: not sent, the server's own setting applies
        "tcp_user_timeout": "4000",  # milliseconds, shown without a unit
        "tcp_keepalives_idle": "2",
        "tcp_keepalives_interval": "1",
        "tcp_keepalives_count": "3",
    }


def test_a_frozen_drain_loses_its_partition_and_cannot_commit_afterwards(
    postgres_url: str,
) -> None:
    """What a SIGSTOPped worker looks like to the server: a transaction holding the
    partition lock, then nothing. The server ends it; the lock is free for another
    worker; the sleeper's COMMIT on waking fails instead of applying anything."""
    frozen = make_engine(postgres_url, limits=SessionLimits(idle_in_transaction=1))
    other = make_engine(postgres_url)
    lock = func.pg_try_advisory_xact_lock(PARTITION_LOCK_SPACE, 7)
    try:
        conn = frozen.connect()
        transaction = conn.begin()
        assert conn.execute(select(lock)).scalar() is True
        conn.execute(text("CREATE TEMP TABLE written (n int)"))

        def taken_over() -> bool:
            with other.begin() as taker:
                return bool(taker.execute(select(lock)).scalar())

        wait_until(taken_over, timeout=WAIT_SECONDS, what="the partition lock to be freed")
        with pytest.raises(DBAPIError) as woke:
            conn.execute(text("INSERT INTO written VALUES (1)"))
            transaction.commit()
        assert woke.value.connection_invalidated, woke.value
        conn.close()
    finally:
        frozen.dispose()
        other.dispose()


def test_writes_waiting_on_a_held_row_answer_503_with_retry_after(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    """A sync write or an admission whose key a stuck session holds waits
    ``BULKAPI_DB_LOCK_TIMEOUT``, not forever, and answers a retryable 503 that changed
    nothing; once the row is free the write applies."""
    key = migrated_with_key(postgres_url, "locks")
    env = service_env(postgres_url, REDIS_URL, redis_namespace, BULKAPI_DB_LOCK_TIMEOUT="0.5")
    server, base_url = start_server(env, tmp_path)
    try:
        api = HttpApi(base_url, key)
        rid = f"held-{uuid.uuid4().hex[:6]}"
        assert api.request("PUT", f"/v1/resources/item/{rid}", json={"n": 1}).status_code == 201
        plain = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(plain) as holder:
            holder.execute("SELECT 1 FROM resources WHERE rid = %s FOR UPDATE", (rid,))
            started = time.monotonic()
            held = api.request("PUT", f"/v1/resources/item/{rid}", json={"n": 2})
            waited = time.monotonic() - started
            assert held.status_code == 503, held.text
            assert held.headers["Retry-After"].isdigit()
            assert held.json()["code"] == "service_unavailable"
            assert "timeout" in held.json()["detail"]
            assert waited < WAIT_SECONDS  # bounded by the lock timeout, not by the holder
            # Admission hands out the key's next sequence number on the same row (through
            # the driver's own cursor): the same bounded wait, the same answer.
            operation = {"op": "upsert", "type": "item", "id": rid, "data": {"n": 4}}
            admission = api.request("POST", "/v1/bulk", json={"operations": [operation]})
            assert admission.status_code == 503, admission.text
            assert admission.headers["Retry-After"].isdigit()
            # A large job's keys go ahead while its documents are checked: the same.
            others = [
                {"op": "upsert", "type": "item", "id": f"{rid}-{n}", "data": {"n": n}}
                for n in range(OVERLAP_FROM)
            ]
            large = api.request("POST", "/v1/bulk", json={"operations": [*others, operation]})
            assert large.status_code == 503, large.text
            assert large.json()["code"] == "service_unavailable"
        assert api.request("GET", "/v1/jobs").json()["items"] == []
        assert api.request("GET", f"/v1/resources/item/{rid}-0").status_code == 404
        after = api.request("PUT", f"/v1/resources/item/{rid}", json={"n": 3})
        assert after.status_code == 200, after.text
        assert after.json()["version"] == 2  # the refused write changed nothing
        assert requests.get(base_url + "/readyz", timeout=10).status_code == 200
    finally:
        server.stop()
