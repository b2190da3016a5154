"""One webhook attempt (``dispatch/webhook_post.py:post``) against real sockets on 127.0.0.1.

The bounds here are the attempt's own: each test gives the attempt a deadline well
beyond what it needs and asserts what the attempt ended with, never how fast it was.
"""

from __future__ import annotations

import socket
import threading
import time
from functools import partial

import pytest

from bulkapi.core.webhooks import IPAddress
from bulkapi.dispatch.webhook_post import Limits, TargetForbidden, post
from tests.receivers import Receiver
from tests.support import WAIT_SECONDS

#: Seconds the attempts below get: short, since each one is meant to run out of it.
SHORT = 0.5


def _limits(seconds: float, connect_timeout: float = 3.0) -> Limits:
    return Limits(time.monotonic() + seconds, connect_timeout)


def _in_thread(call: partial[object]) -> BaseException | object:
    """Run ``call`` in a thread, joined at most WAIT_SECONDS (a hang guard only)."""
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive(), "the attempt did not end"
    return outcome[0]


def test_a_receiver_dripping_its_answer_cannot_stretch_the_attempt_past_its_deadline(
    dripping: Receiver,
) -> None:
    outcome = _in_thread(partial(post, dripping.url(), b"{}", {}, _limits(SHORT), True))
    assert isinstance(outcome, TimeoutError), outcome
    assert len(dripping.received()) == 1  # the request went out; the answer never came


def test_a_lookup_that_never_answers_ends_the_attempt_at_its_deadline() -> None:
    release = threading.Event()

    def hanging(host: str) -> list[IPAddress]:
        release.wait(WAIT_SECONDS)
        raise OSError("released")

    try:
        outcome = _in_thread(
            partial(
                post, "http://hooks.example/x", b"{}", {}, _limits(SHORT), True, resolve=hanging
            )
        )
    finally:
        release.set()
    assert isinstance(outcome, TimeoutError), outcome
    assert "looking up hooks.example" in str(outcome)


def test_connecting_is_bounded_by_the_connect_timeout_not_the_attempts() -> None:
    # A listener whose accept queue is full: further connection attempts get no answer.
    with socket.socket() as full, socket.socket() as queued:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        queued.connect(full.getsockname())
        url = f"http://127.0.0.1:{full.getsockname()[1]}/x"
        outcome = _in_thread(
            partial(post, url, b"{}", {}, _limits(WAIT_SECONDS, connect_timeout=SHORT), True)
        )
    assert isinstance(outcome, TimeoutError), outcome
    assert str(outcome).startswith("connecting to 127.0.0.1"), outcome


def test_a_name_resolving_to_a_forbidden_address_is_refused_without_a_request(
    receiver: Receiver,
) -> None:
    with pytest.raises(TargetForbidden, match="loopback"):
        post(receiver.url(host="localhost"), b"{}", {}, _limits(WAIT_SECONDS), False)
    answer = post(receiver.url(host="localhost"), b"{}", {}, _limits(WAIT_SECONDS), True)
    assert answer.status_code == 204
    assert len(receiver.received()) == 1  # only the allowed one
