"""429s from a real server's rate limit: retried after the Retry-After it sends, within
the client's bounds, then raised."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bulkapi.client import Client, RateLimited, RetryPolicy
from tests.client.conftest import Served, serve
from tests.client.transports import Recording

#: Requests per second each tenant may send to the rate-limited server.
RATE = 2


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def limited(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp(f"limited-{request.param}")
    yield from serve(request.param, tmp, BULKAPI_RATE_LIMIT=f"{RATE}/second")


def test_rate_limited_requests_are_retried_after_their_retry_after(limited: Served) -> None:
    recording = Recording()
    patient = RetryPolicy(attempts=10, max_wait=60)
    with Client(limited.base_url, limited.new_key(), transport=recording, retry=patient) as client:
        for _ in range(RATE * 3):
            assert list(client.jobs()) == []
    statuses = [exchange.status for exchange in recording.exchanges]
    assert 429 in statuses and statuses[-1] == 200
    for limited_answer, retried in zip(recording.exchanges, recording.exchanges[1:], strict=False):
        if limited_answer.status == 429:
            assert limited_answer.retry_after is not None and limited_answer.answered_at
            assert retried.sent_at - limited_answer.answered_at >= float(limited_answer.retry_after)


def test_a_client_out_of_attempts_raises_rate_limited(limited: Served) -> None:
    impatient = RetryPolicy(attempts=1)
    with (
        Client(limited.base_url, limited.new_key(), retry=impatient) as client,
        pytest.raises(RateLimited) as refused,
    ):
        for _ in range(RATE * 3):
            list(client.jobs())
    assert refused.value.status == 429 and refused.value.code == "rate_limited"
    assert refused.value.retry_after is not None and refused.value.retry_after >= 1
