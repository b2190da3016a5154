"""Job events: ``GET /v1/jobs/{id}/events`` as Server-Sent Events.

Each stream is read on its own thread through Flask's test client (``buffered=False``),
block by block as the server sends it; the test waits for what it needs with a generous
timeout, so a stream that never ends fails the test instead of hanging it.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import orjson
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from bulkapi.api import events as job_events
from tests.api.conftest import (
    assert_job_representation,
    assert_problem,
    drains_held,
    ids_in_distinct_partitions,
    partition,
)
from tests.conftest import InProcessApi, Service
from tests.support import WAIT_SECONDS

Block = dict[str, Any]


def _upsert(rid: str) -> dict[str, Any]:
    return {"op": "upsert", "type": "acct", "id": rid, "data": {"rid": rid}}


def _patch(rid: str) -> dict[str, Any]:
    return {"op": "patch", "type": "acct", "id": rid, "data": {"patched": True}}


def _parse_block(raw: bytes) -> Block:
    """One SSE block: its fields (``data`` parsed as JSON) and its comment lines."""
    block: Block = {"comments": []}
    for line in raw.decode().split("\n"):
        if line.startswith(":"):
            block["comments"].append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        block[name] = value.removeprefix(" ")
    if "data" in block:
        block["data"] = orjson.loads(block["data"])
    return block


class EventStream:
    """One events request, read on a thread; parsed blocks arrive on a queue, None at the end.

    The request is made on the reading thread too: ``stream_with_context`` enters the
    request context where the response is created and must leave it on the same thread.
    """

    def __init__(self, service: Service, key: str, job_id: str, **headers: str) -> None:
        self.blocks: list[Block] = []
        self._queue: queue.Queue[Block | None] = queue.Queue()
        self._answered: queue.Queue[TestResponse] = queue.Queue()
        self._ended = False
        threading.Thread(
            target=self._read,
            args=(service.app.test_client(), f"/v1/jobs/{job_id}/events", key, headers),
            daemon=True,
        ).start()
        self.response = self._answered.get(timeout=WAIT_SECONDS)

    def _read(self, client: FlaskClient, path: str, key: str, headers: dict[str, str]) -> None:
        try:
            response = client.get(
                path, headers={"Authorization": f"Bearer {key}", **headers}, buffered=False
            )
            self._answered.put(response)
            buffer = b""
            try:
                for chunk in response.response:
                    buffer += chunk
                    while b"\n\n" in buffer:
                        raw, buffer = buffer.split(b"\n\n", 1)
                        self._queue.put(_parse_block(raw))
            finally:
                response.close()
        finally:
            self._queue.put(None)

    def next_event(self) -> Block | None:
        """The next block that is an event (not a comment or ``retry``), None at the end."""
        while not self._ended:
            block = self._queue.get(timeout=WAIT_SECONDS)
            if block is None:
                self._ended = True
                break
            self.blocks.append(block)
            if "event" in block:
                return block
        return None

    def events(self, count: int) -> list[Block]:
        found = [self.next_event() for _ in range(count)]
        assert None not in found, f"the stream ended early: {self.blocks}"
        return found  # type: ignore[return-value]

    def until_status(self, status: str) -> list[Block]:
        """Events up to and including the status event for ``status``."""
        found = []
        while (event := self.next_event()) is not None:
            found.append(event)
            if event["event"] == "status" and event["data"]["status"] == status:
                return found
        raise AssertionError(f"no {status} event before the end: {self.blocks}")

    def rest(self) -> list[Block]:
        """Every event left, once the stream has ended."""
        found = []
        while (event := self.next_event()) is not None:
            found.append(event)
        return found


def _statuses(events: list[Block]) -> list[str]:
    return [event["data"]["status"] for event in events if event["event"] == "status"]


def _assert_well_formed(events: list[Block], job_id: str) -> None:
    """Ids strictly increase, every data is the job, and the counts only ever grow."""
    ids = [int(event["id"]) for event in events]
    assert ids == sorted(set(ids)), ids
    finished = []
    for event in events:
        assert event["event"] in {"status", "progress"}, event
        assert event["data"]["id"] == job_id
        assert_job_representation(event["data"])
        counts = event["data"]["counts"]
        finished.append(event["data"]["total"] - counts["pending"])
    assert finished == sorted(finished), finished


def _finished_job(api: InProcessApi) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job that ended partially_succeeded: its 202 body and its final representation."""
    job = api.submit([_upsert("a"), _patch("absent")])
    return job, api.wait_job(job["id"])


# --- following a job ---------------------------------------------------------------------


def test_events_follow_a_job_from_queued_to_its_terminal_status(
    service: Service, api: InProcessApi
) -> None:
    first, second = ids_in_distinct_partitions(service, api, "acct", 2)
    with drains_held(service) as drains:
        job = api.submit([_upsert(first), _upsert(second)])
        stream = EventStream(service, api.key, job["id"])
        assert stream.response.status_code == 200
        assert stream.response.mimetype == "text/event-stream"
        assert stream.response.headers["Cache-Control"] == "no-store"
        assert stream.response.headers["X-Accel-Buffering"] == "no"
        opening = stream.events(2)
        assert [event["event"] for event in opening] == ["status", "progress"]
        assert [event["data"]["status"] for event in opening] == ["queued", "queued"]
        assert opening[1]["data"]["counts"]["pending"] == 2
        drains.drain(partition(service, api, "acct", first))
        half = stream.until_status("processing")
    rest = stream.rest()
    seen = opening + half + rest
    _assert_well_formed(seen, job["id"])
    assert _statuses(seen) == ["queued", "processing", "succeeded"]
    progress_after_half = [event for event in rest if event["event"] == "progress"]
    assert progress_after_half[-1]["data"]["counts"]["pending"] == 0
    assert rest[-1]["event"] == "status"  # the terminal event is the last one
    assert rest[-1]["data"] == api.get(f"/v1/jobs/{job['id']}").get_json()
    assert stream.blocks[0] == {"comments": [], "retry": str(job_events.RETRY_MILLISECONDS)}


def test_no_transition_is_skipped_when_two_happen_between_polls(
    service: Service, api: InProcessApi
) -> None:
    ids = ids_in_distinct_partitions(service, api, "acct", 3)
    with drains_held(service) as drains:
        job = api.submit([_upsert(rid) for rid in ids])
        stream = EventStream(service, api.key, job["id"])
        opening = stream.events(2)
        drains.drain(partition(service, api, "acct", ids[0]))
        assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
        rest = stream.rest()
    seen = opening + rest
    _assert_well_formed(seen, job["id"])
    assert _statuses(seen) == ["queued", "processing", "cancelled"]
    assert seen[-1]["data"]["counts"] == {
        "pending": 0,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 2,
    }


def test_a_finished_job_streams_its_final_state_then_ends(
    service: Service, api: InProcessApi
) -> None:
    job, final = _finished_job(api)
    seen = EventStream(service, api.key, job["id"]).rest()
    assert [event["event"] for event in seen] == ["progress", "status"]
    assert [event["data"] for event in seen] == [final, final]
    _assert_well_formed(seen, job["id"])


# --- resuming with Last-Event-ID -----------------------------------------------------------


def test_resuming_replays_every_missed_transition_in_order(
    service: Service, api: InProcessApi
) -> None:
    with drains_held(service):
        job = api.submit([_upsert("a")])
        first = EventStream(service, api.key, job["id"])
        opening = first.events(2)
    final = api.wait_job(job["id"])
    first.rest()
    resumed = EventStream(service, api.key, job["id"], **{"Last-Event-ID": opening[-1]["id"]})
    seen = resumed.rest()
    assert [event["event"] for event in seen] == ["status", "progress", "status"]
    assert _statuses(seen) == ["processing", "succeeded"]
    _assert_well_formed(opening + seen, job["id"])
    processing = seen[0]["data"]
    assert processing["finished_at"] is None
    assert [entry["status"] for entry in processing["status_history"]] == [
        "queued",
        "processing",
    ]
    assert processing["status_history"] == final["status_history"][:2]
    assert seen[-1]["data"] == final


def test_resuming_after_the_terminal_event_answers_no_content(
    service: Service, api: InProcessApi
) -> None:
    job, _ = _finished_job(api)
    progress, terminal = EventStream(service, api.key, job["id"]).rest()
    response = api.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": terminal["id"]})
    assert response.status_code == 204
    assert response.data == b""
    after_progress = EventStream(service, api.key, job["id"], **{"Last-Event-ID": progress["id"]})
    assert after_progress.rest() == [terminal]


@pytest.mark.parametrize("last_event_id", ["garbage", "-1", "", "1e3", "9" * 30, "99999999"])
def test_a_last_event_id_this_job_never_sent_starts_over(
    service: Service, api: InProcessApi, last_event_id: str
) -> None:
    job, final = _finished_job(api)
    seen = EventStream(service, api.key, job["id"], **{"Last-Event-ID": last_event_id}).rest()
    assert [event["event"] for event in seen] == ["progress", "status"]
    assert seen[-1]["data"] == final


# --- lifetime ------------------------------------------------------------------------------


def test_a_quiet_stream_sends_keep_alives_and_ends_after_its_lifetime(
    service: Service, api: InProcessApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_events, "STREAM_SECONDS", 1.0)
    monkeypatch.setattr(job_events, "HEARTBEAT_SECONDS", 0.1)
    with service.drains_paused():
        job = api.submit([_upsert("a")])
        stream = EventStream(service, api.key, job["id"])
        seen = stream.rest()
    assert _statuses(seen) == ["queued"]
    assert [event["event"] for event in seen] == ["status", "progress"]
    comments = [comment for block in stream.blocks for comment in block["comments"]]
    assert "keep-alive" in comments
    assert api.wait_job(job["id"])["status"] == "succeeded"


# --- who may read --------------------------------------------------------------------------


def test_status_token_follows_its_own_job(service: Service, api: InProcessApi) -> None:
    job, final = _finished_job(api)
    seen = EventStream(service, job["status_token"], job["id"]).rest()
    assert seen[-1]["data"] == final
    other = api.submit([_upsert("b")])
    reader = InProcessApi(service.app.test_client(), job["status_token"])
    assert_problem(reader.get(f"/v1/jobs/{other['id']}/events"), 404, "not_found")


def test_another_tenants_job_events_are_not_found(service: Service, api: InProcessApi) -> None:
    job = api.submit([_upsert("a")])
    assert_problem(service.api().get(f"/v1/jobs/{job['id']}/events"), 404, "not_found")
    api.wait_job(job["id"])


@pytest.mark.parametrize("job_id", ["job_00000000000000000000000000", "nope"])
def test_unknown_job_events_are_not_found(api: InProcessApi, job_id: str) -> None:
    assert_problem(api.get(f"/v1/jobs/{job_id}/events"), 404, "not_found")


def test_events_without_a_key_are_unauthorized(service: Service, api: InProcessApi) -> None:
    job = api.submit([_upsert("a")])
    response = service.anonymous().get(f"/v1/jobs/{job['id']}/events")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    api.wait_job(job["id"])
