"""Clients of the fleet: bulk jobs and ``Prefer: wait`` PUTs over a small hot key space,
spread over every host's API, each answer (or its absence) recorded with its timing."""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests

#: Seconds a client waits for a connection; a host cut off fails here, before sending.
CONNECT_TIMEOUT = 1.0
#: Seconds a client waits for an answer once the request is sent: well above what a
#: PUT may wait (``PUT_WAIT`` plus the lock wait) and than an admission takes; a request
#: in flight when its host was cut off ends here, its outcome unknown.
READ_TIMEOUT = 10.0
#: A host whose connect failed is skipped this long.
SKIP_SECONDS = 1.0
#: ``Prefer: wait`` of every PUT.
PUT_WAIT = 5
#: Requests per client at most (every loop is bounded in count and time).
MAX_REQUESTS = 3000


@dataclass
class Answer:
    client: int
    kind: str  # "bulk" or "put"
    host: str
    started: float
    finished: float
    keys: tuple[str, ...]
    #: False when the request never reached a server (its connect failed).
    sent: bool
    #: None: sent, but no answer came (the outcome is unknown).
    status: int | None = None
    retry_after: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    #: A PUT's document and the version its answer gave.
    data: dict[str, Any] | None = None
    version: int | None = None

    @property
    def latency(self) -> float:
        return self.finished - self.started

    @property
    def accepted(self) -> bool:
        return self.status in (200, 201, 202)

    @property
    def unknown(self) -> bool:
        return self.sent and self.status is None


@dataclass
class Workload:
    """``clients`` threads; each request goes to the next host that is not being skipped."""

    hosts: dict[str, str]  # host name -> base URL
    key: str
    hot_keys: list[str]
    clients: int = 4
    ops_per_job: int = 10
    bulk_share: float = 0.6
    pause: float = 0.02
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _skip_until: dict[str, float] = field(default_factory=dict)

    def start(self) -> Workload:
        for client in range(self.clients):
            thread = threading.Thread(target=self._run, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(READ_TIMEOUT + 10)
        assert not any(thread.is_alive() for thread in self._threads), "a client hung"

    def accepted_jobs(self) -> int:
        with self._lock:
            return sum(1 for answer in self.answers if answer.kind == "bulk" and answer.accepted)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def _pick(self, rng: random.Random) -> tuple[str, str]:
        now = time.monotonic()
        live = [name for name in self.hosts if self._skip_until.get(name, 0) <= now]
        name = rng.choice(live or list(self.hosts))
        return name, self.hosts[name]

    def _run(self, client: int) -> None:
        rng = random.Random(client)
        # No keep-alive: each request connects anew, so a host cut off fails at connect
        # (nothing sent) rather than on a connection opened before the cut.
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.key}"
        session.headers["Connection"] = "close"
        for _ in range(MAX_REQUESTS):
            if self._stop.is_set():
                return
            name, base = self._pick(rng)
            if rng.random() < self.bulk_share:
                answer = self._bulk(session, client, name, base, rng)
            else:
                answer = self._put(session, client, name, base, rng)
            with self._lock:
                self.answers.append(answer)
            if answer.status is None:
                self._skip_until[name] = time.monotonic() + SKIP_SECONDS
            time.sleep(self.pause)

    def _bulk(
        self, session: requests.Session, client: int, name: str, base: str, rng: random.Random
    ) -> Answer:
        keys = tuple(rng.sample(self.hot_keys, self.ops_per_job))
        tag = uuid.uuid4().hex[:10]
        body = {
            "operations": [
                {"op": "upsert", "type": "item", "id": key, "data": {"tag": tag, "c": client}}
                for key in keys
            ],
            "metadata": {"tag": tag},
        }
        answer = Answer(client, "bulk", name, 0.0, 0.0, keys, sent=True)
        self._send(session, answer, "POST", base + "/v1/bulk", body)
        if answer.status == 202:
            answer.job_id = str(answer.body["id"])
        return answer

    def _put(
        self, session: requests.Session, client: int, name: str, base: str, rng: random.Random
    ) -> Answer:
        key = rng.choice(self.hot_keys)
        data = {"tag": uuid.uuid4().hex[:10], "c": client, "sync": True}
        answer = Answer(client, "put", name, 0.0, 0.0, (key,), sent=True, data=data)
        url = f"{base}/v1/resources/item/{key}"
        self._send(session, answer, "PUT", url, data, headers={"Prefer": f"wait={PUT_WAIT}"})
        if answer.status in (200, 201):
            answer.version = int(answer.body["version"])
        return answer

    def _send(
        self,
        session: requests.Session,
        answer: Answer,
        method: str,
        url: str,
        body: dict[str, Any],
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send the request and fill in ``answer``: its timing, and what came back."""
        answer.started = time.monotonic()
        try:
            response = session.request(
                method, url, json=body, headers=headers, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)
            )
        except requests.ConnectTimeout:
            answer.sent = False
        except requests.ConnectionError as error:
            # Refused or unreachable before sending: nothing happened; anything else
            # (reset, closed mid-request) may have happened after the commit.
            answer.sent = "NewConnectionError" not in repr(error)
        except requests.RequestException:
            pass
        else:
            answer.status = response.status_code
            answer.retry_after = response.headers.get("Retry-After")
            answer.body = self._json_of(response)
        answer.finished = time.monotonic()

    @staticmethod
    def _json_of(response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
