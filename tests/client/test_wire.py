"""The client's decisions without a server: replayable bodies, the event decoder, and
which failures are tried again (httpx.MockTransport answers in the server's place)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from bulkapi.client import (
    Client,
    ConnectionFailed,
    IdempotencyKeyInUse,
    RateLimited,
    RetryPolicy,
    ServiceUnavailable,
)
from bulkapi.client._body import CHUNK_BYTES, ReplayableBody
from bulkapi.client._follow import EventDecoder

#: Retries at once: these tests are about which failures are retried, not the waits.
FAST = RetryPolicy(attempts=3, max_wait=1.0, backoff=0.0)


def _pieces(count: int, pulled: list[int]) -> Iterator[bytes]:
    for number in range(count):
        pulled.append(number)
        yield b'{"n":%d,"pad":"%s"}\n' % (number, b"x" * 200)


def test_a_replayed_body_is_the_same_bytes_after_a_try_given_up_midway() -> None:
    pulled: list[int] = []
    body = ReplayableBody(_pieces(2_000, pulled))
    first_try = body.chunks()
    first_chunk = next(first_try)
    assert len(first_chunk) >= CHUNK_BYTES and len(pulled) < 2_000  # produced lazily
    first_try.close()
    whole = b"".join(body.chunks())
    assert whole == b"".join(_pieces(2_000, []))
    assert pulled == list(range(2_000))  # every piece pulled from the source once
    assert b"".join(body.chunks()) == whole
    body.close()


def test_the_event_decoder_moves_its_last_id_only_on_complete_events() -> None:
    decoder = EventDecoder()
    assert decoder.feed("retry: 2500") is None and decoder.feed("") is None
    assert decoder.reconnect == 2.5
    for line in [": keep-alive", "", "event: progress", "id: 7", 'data: {"a":', "data: 1}"]:
        assert decoder.feed(line) is None
    assert decoder.last_id is None  # the event is not complete yet
    event = decoder.feed("")
    assert event is not None and (event.name, event.id) == ("progress", "7")
    assert json.loads(event.data) == {"a": 1}
    decoder.feed("id: 8")
    assert decoder.last_id == "7"


def _answers(*responses: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(responses)

    def answer(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return queue.pop(0)

    return httpx.MockTransport(answer), seen


def _problem(status: int, code: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return httpx.Response(
        status, json={"status": status, "code": code, "detail": code}, headers=headers
    )


def _job() -> httpx.Response:
    return httpx.Response(202, json={"id": "job_1", "status": "queued", "total": 1})


def test_a_submit_whose_key_is_in_use_is_sent_again_with_the_same_key() -> None:
    transport, seen = _answers(_problem(409, "idempotency_key_in_use", "0"), _job())
    with Client("http://api", "k", transport=transport, retry=FAST) as client:
        assert client.submit([{"op": "delete", "type": "t", "id": "a"}]).id == "job_1"
    assert len(seen) == 2
    assert seen[0].headers["Idempotency-Key"] == seen[1].headers["Idempotency-Key"]
    assert seen[0].content == seen[1].content


def test_a_sync_write_with_a_key_in_use_is_not_retried() -> None:
    transport, seen = _answers(_problem(409, "idempotency_key_in_use", "0"))
    with (
        Client("http://api", "k", transport=transport, retry=FAST) as client,
        pytest.raises(IdempotencyKeyInUse),
    ):
        client.put("t", "a", {})
    assert len(seen) == 1


def test_rate_limits_are_retried_until_the_attempts_run_out() -> None:
    transport, seen = _answers(*[_problem(429, "rate_limited", "0")] * 3)
    with (
        Client("http://api", "k", transport=transport, retry=FAST) as client,
        pytest.raises(RateLimited) as limited,
    ):
        client.get("t", "a")
    assert len(seen) == 3 and limited.value.retry_after == 0


def test_a_retry_after_beyond_the_wait_budget_is_raised_at_once() -> None:
    transport, seen = _answers(_problem(503, "service_unavailable", "3600"))
    with (
        Client("http://api", "k", transport=transport, retry=FAST) as client,
        pytest.raises(ServiceUnavailable) as unavailable,
    ):
        client.get("t", "a")
    assert len(seen) == 1 and unavailable.value.retry_after == 3600


def _failing(error: type[httpx.TransportError], then: httpx.Response) -> httpx.MockTransport:
    failed: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if not failed:
            failed.append(request)
            raise error("broken", request=request)
        return then

    return httpx.MockTransport(answer)


def test_a_write_whose_connection_broke_after_sending_is_not_sent_twice() -> None:
    resource = httpx.Response(
        200, json={"type": "t", "id": "a", "version": 2, "data": {}, "updated_at": "x"}
    )
    with (
        Client(
            "http://api", "k", transport=_failing(httpx.ReadError, resource), retry=FAST
        ) as client,
        pytest.raises(ConnectionFailed),
    ):
        client.put("t", "a", {})
    with Client(
        "http://api", "k", transport=_failing(httpx.ConnectError, resource), retry=FAST
    ) as client:
        assert client.put("t", "a", {}).version == 2  # never connected: safe to send
    with Client(
        "http://api", "k", transport=_failing(httpx.ReadError, resource), retry=FAST
    ) as client:
        assert client.get("t", "a").version == 2  # a read is always safe to send again
