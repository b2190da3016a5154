"""Wait slots: long polls, event streams and ``Prefer: wait`` share a bounded number of
threads per API process, and one tenant may hold only half of them.

The service here allows two waiting requests, so a tenant gets one. Whether a request
waited is made visible without clocks: the test lets the request make its first read,
then finishes the work it would wait for. A request that waits sees the change (the
cancelled job, the freed key); one that was answered at once does not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkapi.api import jobs as jobs_api
from bulkapi.writes import SyncWriter
from tests.api.conftest import assert_problem
from tests.api.test_events import EventStream
from tests.conftest import InProcessApi, Service, embedded_service
from tests.support import WAIT_SECONDS


@pytest.fixture(scope="module")
def two_slots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp: Path = tmp_path_factory.mktemp("wait-slots")
    yield from embedded_service(tmp, max_waiting_requests=2)


def _upsert(rid: str) -> dict[str, Any]:
    return {"op": "upsert", "type": "acct", "id": rid, "data": {"rid": rid}}


class FirstCall:
    """Wraps a function so a test can wait until it has been called once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
        self.called = threading.Event()
        real: Callable[..., Any] = getattr(owner, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            try:
                return real(*args, **kwargs)
            finally:
                self.called.set()

        monkeypatch.setattr(owner, name, spy)

    def wait(self) -> None:
        assert self.called.wait(WAIT_SECONDS), "the request never made its first read"
        self.called.clear()


def _in_thread(request: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``request`` on a thread; the returned function joins it and gives its answer."""
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(request()))
    thread.start()

    def answer() -> Any:
        thread.join(WAIT_SECONDS)
        assert answers, "the request did not finish"
        return answers[0]

    return answer


def _long_poll_status(
    api: InProcessApi, job_id: str, first_read: FirstCall, cancel: InProcessApi
) -> str:
    """The status a 60 s long poll answers when the job is cancelled after its first read."""
    answer = _in_thread(lambda: api.get(f"/v1/jobs/{job_id}?wait=60").get_json())
    first_read.wait()
    assert cancel.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    status: str = answer()["status"]
    return status


def test_a_tenant_waits_in_at_most_half_the_slots_and_gets_answers_at_once_beyond(
    two_slots: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_a, tenant_b = two_slots.api(), two_slots.api()
    first_read = FirstCall(monkeypatch, jobs_api, "read_job")
    with two_slots.drains_paused():
        held = tenant_a.submit([_upsert("held")])
        stream = EventStream(two_slots, tenant_a.key, held["id"])
        stream.events(2)  # queued, progress: the stream is open, waiting, holding A's slot

        polled = tenant_a.submit([_upsert("a-1")])
        assert _long_poll_status(tenant_a, polled["id"], first_read, tenant_a) == "queued"

        # Another tenant still finds a slot: its long poll waits and sees the cancel.
        other = tenant_b.submit([_upsert("b-1")])
        assert _long_poll_status(tenant_b, other["id"], first_read, tenant_b) == "cancelled"

        # The stream ends with its job's terminal status and gives its slot back.
        assert tenant_a.post(f"/v1/jobs/{held['id']}/cancel").status_code == 202
        assert stream.rest()[-1]["data"]["status"] == "cancelled"
        again = tenant_a.submit([_upsert("a-2")])
        assert _long_poll_status(tenant_a, again["id"], first_read, tenant_a) == "cancelled"


def test_a_sync_write_without_a_slot_answers_busy_at_once(
    two_slots: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_a, tenant_b = two_slots.api(), two_slots.api()
    first_try = FirstCall(monkeypatch, SyncWriter, "write_once")

    def busy_write_status(api: InProcessApi) -> int:
        """The status of a ``Prefer: wait=30`` PUT to a busy key freed after its first try."""
        blocking = api.submit([_upsert("k")])
        answer = _in_thread(
            lambda: (
                api.put(
                    "/v1/resources/acct/k", json={"n": 1}, headers={"Prefer": "wait=30"}
                ).status_code
            )
        )
        first_try.wait()
        assert api.post(f"/v1/jobs/{blocking['id']}/cancel").status_code == 202
        status: int = answer()
        return status

    with two_slots.drains_paused():
        held = tenant_a.submit([_upsert("held")])
        stream = EventStream(two_slots, tenant_a.key, held["id"])
        stream.events(2)
        assert busy_write_status(tenant_a) == 409  # no slot: resource_busy at once
        assert busy_write_status(tenant_b) == 201  # waited, then applied
        assert tenant_a.post(f"/v1/jobs/{held['id']}/cancel").status_code == 202
        stream.rest()


def test_a_sync_write_says_whether_its_prefer_wait_was_honoured(service: Service) -> None:
    """``Preference-Applied: wait=N`` when the write could wait; none, and a sentence in
    the problem's detail, when the tenant's wait slots were all taken."""
    busy, other = service.api(), service.api()
    per_tenant = service.runtime.settings.max_waiting_requests // 2
    with service.drains_paused():
        held = busy.submit([_upsert("held")])
        streams = [EventStream(service, busy.key, held["id"]) for _ in range(per_tenant)]
        for stream in streams:
            stream.events(2)  # open and waiting: every slot of the tenant is taken

        busy.submit([_upsert("k")])
        declined = busy.put("/v1/resources/acct/k", json={"n": 1}, headers={"Prefer": "wait=10"})
        body = assert_problem(declined, 409, "resource_busy")
        assert "Prefer: wait was declined" in body["detail"]
        assert "Preference-Applied" not in declined.headers
        assert declined.headers["Retry-After"]

        other.submit([_upsert("k")])
        waited = other.put("/v1/resources/acct/k", json={"n": 1}, headers={"Prefer": "wait=1"})
        body = assert_problem(waited, 409, "resource_busy")
        assert "declined" not in body["detail"]
        assert waited.headers["Preference-Applied"] == "wait=1"

        capped = other.put("/v1/resources/acct/free", json={}, headers={"Prefer": "wait=99"})
        assert capped.status_code == 201
        assert capped.headers["Preference-Applied"] == "wait=30"  # the longest honoured
        plain = other.put("/v1/resources/acct/free", json={})
        assert plain.status_code == 200 and "Preference-Applied" not in plain.headers

        assert busy.post(f"/v1/jobs/{held['id']}/cancel").status_code == 202
        for stream in streams:
            assert stream.rest()[-1]["data"]["status"] == "cancelled"


def test_a_result_stream_beyond_the_tenants_share_is_too_many_streams(service: Service) -> None:
    """NDJSON results hold a thread while they are read, so they take a wait slot; a
    tenant whose share is taken gets 429 ``too_many_streams`` (the JSON pages still
    answer), and its stream answers again once a slot is given back."""
    tenant = service.api()
    ndjson = {"Accept": "application/x-ndjson"}
    per_tenant = service.runtime.settings.max_waiting_requests // 2
    with service.drains_paused():
        held = tenant.submit([_upsert("held")])
        streams = [EventStream(service, tenant.key, held["id"]) for _ in range(per_tenant)]
        for stream in streams:
            stream.events(2)

        refused = tenant.get(f"/v1/jobs/{held['id']}/results", headers=ndjson)
        assert_problem(refused, 429, "too_many_streams")
        assert refused.headers["Retry-After"].isdigit()
        assert tenant.get(f"/v1/jobs/{held['id']}/results").status_code == 200

        assert tenant.post(f"/v1/jobs/{held['id']}/cancel").status_code == 202
        for stream in streams:
            stream.rest()
    answered = tenant.get(f"/v1/jobs/{held['id']}/results", headers=ndjson)
    assert answered.status_code == 200 and answered.mimetype == "application/x-ndjson"
    assert [orjson.loads(line)["status"] for line in answered.data.splitlines()] == ["cancelled"]
