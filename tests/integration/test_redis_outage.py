"""Redis away or hung: the API keeps accepting work; only readiness says so.

Neither admission nor sync writes need Redis (the database is the queue of record; a
lost wake-up is healed by the sweeper; rate counts are shared in the background). So
with the broker's Redis killed, or stopped dead (SIGSTOP: connections open, nothing
answers), writes must still succeed, `/readyz` must answer 503 promptly instead of
hanging, and once Redis is back the accepted work is applied. Real processes over real
HTTP, on a private Redis this test may stop.
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.integration.private_services import PrivateRedis, private_redis
from tests.support import (
    WAIT_SECONDS,
    HttpApi,
    migrated_with_key,
    service_env,
    start_server,
    start_workers,
    wait_until,
)

#: What the API logs when its rate counts can no longer be shared, and when they can again.
DEGRADED = "rate limits are degraded: enforced per process only"
SHARED_AGAIN = "rate limits are shared again"


def _writes_succeed(api: HttpApi, label: str) -> str:
    """A bulk submission and a sync PUT both succeed; returns the job id."""
    job = api.request(
        "POST",
        "/v1/bulk",
        json={"operations": [{"op": "upsert", "type": "item", "id": label, "data": {"n": 1}}]},
    )
    assert job.status_code == 202, job.text
    put = api.request("PUT", f"/v1/resources/item/sync-{label}", json={"n": 1})
    assert put.status_code == 201, put.text
    read = api.request("GET", f"/v1/jobs/{job.json()['id']}")
    assert read.status_code == 200, read.text
    job_id: str = job.json()["id"]
    return job_id


def _not_ready(api: HttpApi) -> None:
    # The client timeout is only a hang guard: a hung Redis must not hang the probe.
    response = requests.get(api.base_url + "/readyz", timeout=WAIT_SECONDS)
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "not_ready"
    assert int(response.headers["Retry-After"]) >= 1


def _paused(redis_server: PrivateRedis) -> None:
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)


def _resumed(redis_server: PrivateRedis) -> None:
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGCONT)


def test_writes_are_accepted_while_redis_is_down_or_hung_and_applied_when_it_returns(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    with private_redis(tmp_path) as broker:
        # The default per-tenant rate limit stays on: it counts in this Redis.
        env = service_env(postgres_url, broker.url, redis_namespace, BULKAPI_REDIS_TIMEOUT="1")
        key = migrated_with_key(postgres_url, "outage")
        server, base_url = start_server(env, tmp_path)
        try:
            api = HttpApi(base_url, key)
            broker.kill()
            down = _writes_succeed(api, "while-down")
            _not_ready(api)

            broker.start()
            _paused(broker)
            try:
                hung = _writes_succeed(api, "while-hung")
                _not_ready(api)
            finally:
                _resumed(broker)

            workers = start_workers(env, tmp_path)
            try:
                for job_id in (down, hung):
                    assert api.wait_job(job_id)["status"] == "succeeded"
            finally:
                workers.stop()
        finally:
            server.stop()


#: Seconds the API's Redis commands may take in the hung-Redis test ...
HUNG_REDIS_TIMEOUT = 15
#: ... and a request there (a hang guard: a write takes milliseconds, but would take
#: the Redis timeout if it waited on Redis).
HUNG_REQUEST_TIMEOUT = HUNG_REDIS_TIMEOUT / 3


def _puts_answer(api: HttpApi, label: str, count: int) -> None:
    """``count`` sync PUTs from 8 threads: each answers 2xx, or 503 with Retry-After,
    well before a Redis command would give up."""

    def put(n: int) -> tuple[int, str | None]:
        response = requests.put(
            f"{api.base_url}/v1/resources/item/{label}-{n}",
            json={"n": n},
            headers={"Authorization": f"Bearer {api.key}"},
            timeout=HUNG_REQUEST_TIMEOUT,
        )
        return response.status_code, response.headers.get("Retry-After")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(put, range(count)))
    wrong = [a for a in answers if not (200 <= a[0] < 300 or (a[0] == 503 and a[1]))]
    assert not wrong, wrong


def test_a_hung_redis_does_not_hold_up_requests_and_is_logged_once(
    tmp_path: Path, postgres_url: str, redis_namespace: str
) -> None:
    """Only the background exchange of rate counts talks to Redis: requests go on while it
    is stopped, and the API says once that limits are per process, and once that they
    are shared again."""
    with private_redis(tmp_path) as broker:
        env = service_env(
            postgres_url,
            broker.url,
            redis_namespace,
            BULKAPI_REDIS_TIMEOUT=str(HUNG_REDIS_TIMEOUT),
            BULKAPI_WEB_PROCESSES="1",  # one log line per process: one process
            BULKAPI_RATE_LIMIT="100000/second",
        )
        key = migrated_with_key(postgres_url, "hung")
        server, base_url = start_server(env, tmp_path)
        try:
            api = HttpApi(base_url, key)
            _puts_answer(api, "before", 20)
            _paused(broker)
            try:
                _puts_answer(api, "first", 50)  # while the exchange waits on Redis
                wait_until(lambda: DEGRADED in server.log(), what="the degraded warning")
                _puts_answer(api, "while-hung", 150)
            finally:
                _resumed(broker)
            _puts_answer(api, "after", 20)
            wait_until(lambda: SHARED_AGAIN in server.log(), what="limits shared again")
            _puts_answer(api, "shared", 20)
            log = server.log()
            assert log.count(DEGRADED) == 1, log
            assert log.count(SHARED_AGAIN) == 1, log
        finally:
            server.stop()
