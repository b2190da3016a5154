"""The benchmark's HTTP client: bodies built ahead of time, submits, and job completion."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import requests

#: Upper bound on how long any one job may take before the run gives up.
JOB_TIMEOUT = 900
#: Attempts per request when a kept-alive connection is reset under the client (gunicorn
#: closes idle keep-alive connections after 2 s; on a loaded host a reused one can race it).
ATTEMPTS = 3


def _retrying(call: Callable[[], requests.Response]) -> requests.Response:
    for attempt in range(ATTEMPTS):
        try:
            return call()
        except requests.ConnectionError:
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


TERMINAL = {"succeeded", "partially_succeeded", "failed", "cancelled"}


def document(n: int) -> dict[str, Any]:
    """The resource body every case writes (about 60 bytes of JSON)."""
    return {"name": f"item-{n}", "n": n, "tags": ["bench", "x"], "ok": True}


def upserts(
    prefix: str, count: int, keys: int | None = None, start: int = 0, rtype: str = "item"
) -> list[dict[str, Any]]:
    """``count`` upserts over ``keys`` distinct ids (all distinct when ``keys`` is None)."""
    keys = keys or count
    return [
        {
            "op": "upsert",
            "type": rtype,
            "id": f"{prefix}-{(start + i) % keys}",
            "data": document(i),
        }
        for i in range(count)
    ]


def ndjson_body(ops: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(op) for op in ops) + b"\n"


def json_body(ops: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"operations": ops})


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Client:
    base_url: str
    key: str

    def __post_init__(self) -> None:
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.key}"

    def submit(self, body: bytes, ndjson: bool = True, retry: bool = False) -> tuple[str, float]:
        """POST /v1/bulk; returns the job id and the seconds until the 202 arrived.

        With ``retry``, an Idempotency-Key makes a retry after a reset connection safe
        (bulkapi replays the first answer); it costs the server a body digest, so latency
        cases leave it out.
        """
        headers = {"Content-Type": "application/x-ndjson" if ndjson else "application/json"}
        if retry:
            headers["Idempotency-Key"] = uuid.uuid4().hex

        def post() -> requests.Response:
            return self.session.post(
                self.base_url + "/v1/bulk", data=body, headers=headers, timeout=300
            )

        started = time.perf_counter()
        response = _retrying(post) if retry else post()
        elapsed = time.perf_counter() - started
        if response.status_code != 202:
            raise RuntimeError(
                f"bulk submit answered {response.status_code}: {response.text[:500]}"
            )
        return response.json()["id"], elapsed

    def wait_job(self, job_id: str) -> dict[str, Any]:
        """Long-poll until the job is terminal; its ``finished_at`` is when it got there."""
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            response = _retrying(
                lambda: self.session.get(f"{self.base_url}/v1/jobs/{job_id}?wait=30", timeout=60)
            )
            body: dict[str, Any] = response.json()
            if body.get("status") in TERMINAL:
                if body["status"] != "succeeded":
                    raise RuntimeError(f"job {job_id} ended {body['status']}: {body['counts']}")
                return body
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} not terminal after {JOB_TIMEOUT}s: {body}")

    def finished_at(self, job_id: str) -> float:
        """Epoch seconds at which the job became terminal (the server's clock, same host)."""
        return parse_time(self.wait_job(job_id)["finished_at"])

    def put(self, rtype: str, rid: str, data: dict[str, Any]) -> int:
        response = _retrying(
            lambda: self.session.put(
                f"{self.base_url}/v1/resources/{rtype}/{rid}",
                data=orjson.dumps(data),
                headers={"Content-Type": "application/json"},
                timeout=60,
            )
        )
        return response.status_code
