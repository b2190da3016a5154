"""Callback hosts resolved at submit (``api/callbacks.py``), with resolvers the tests supply."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from bulkapi.api.callbacks import CACHE_SECONDS, CallbackLookups
from bulkapi.config import Settings
from bulkapi.core.errors import CallbackUrlForbidden
from bulkapi.core.webhooks import IPAddress
from tests.support import WAIT_SECONDS


class Resolver:
    """Answers with fixed addresses (or raises), counting the names it was asked."""

    def __init__(self, *answer: str, error: Exception | None = None) -> None:
        self.answer = [ipaddress.ip_address(a) for a in answer]
        self.error = error
        self.asked: list[str] = []

    def __call__(self, host: str) -> list[IPAddress]:
        self.asked.append(host)
        if self.error is not None:
            raise self.error
        return self.answer


@pytest.mark.parametrize(
    "answer",
    [("127.0.0.1",), ("93.184.216.34", "10.0.0.7"), ("2606:4700::1", "::ffff:169.254.169.254")],
    ids=["loopback", "one-private-among-public", "mapped-link-local"],
)
def test_a_name_with_any_forbidden_address_is_refused(answer: tuple[str, ...]) -> None:
    lookups = CallbackLookups(WAIT_SECONDS, Resolver(*answer))
    with pytest.raises(CallbackUrlForbidden) as raised:
        lookups.check("https://hooks.example/x", allow_private=False)
    assert raised.value.code == "callback_url_forbidden"
    assert list(raised.value.errors) == ["callback_url"]


def test_a_name_with_only_public_addresses_is_accepted() -> None:
    resolver = Resolver("93.184.216.34", "2606:4700::1")
    CallbackLookups(WAIT_SECONDS, resolver).check(
        "https://Hooks.Example:8443/x", allow_private=False
    )
    assert resolver.asked == ["hooks.example"]


@pytest.mark.parametrize(
    "error",
    [OSError("Name or service not known"), UnicodeError("label too long")],
    ids=["not-found", "bad-name"],
)
def test_a_name_that_does_not_resolve_is_accepted(error: Exception) -> None:
    CallbackLookups(WAIT_SECONDS, Resolver(error=error)).check(
        "https://hooks.example/x", allow_private=False
    )


def test_a_lookup_that_hangs_is_given_up_and_the_url_accepted() -> None:
    release = threading.Event()

    def hanging(host: str) -> list[IPAddress]:
        release.wait(WAIT_SECONDS)
        return [ipaddress.ip_address("127.0.0.1")]

    try:
        CallbackLookups(0.2, hanging).check("https://hooks.example/x", allow_private=False)
    finally:
        release.set()


@pytest.mark.parametrize(
    ("url", "allow_private", "timeout"),
    [
        ("https://hooks.example/x", True, WAIT_SECONDS),
        ("https://hooks.example/x", False, 0.0),
        ("https://93.184.216.34/x", False, WAIT_SECONDS),
        ("https://[2606:4700::1]/x", False, WAIT_SECONDS),
        (None, False, WAIT_SECONDS),
    ],
    ids=["private-allowed", "lookups-off", "ipv4-literal", "ipv6-literal", "no-callback"],
)
def test_nothing_is_looked_up_when_there_is_nothing_to_learn(
    url: str | None, allow_private: bool, timeout: float
) -> None:
    resolver = Resolver("127.0.0.1")
    CallbackLookups(timeout, resolver).check(url, allow_private=allow_private)
    assert resolver.asked == []


def test_answers_are_reused_for_a_while_then_looked_up_again() -> None:
    now = [1000.0]
    resolver = Resolver("93.184.216.34")
    lookups = CallbackLookups(WAIT_SECONDS, resolver, clock=lambda: now[0])
    for path in ("/a", "/b"):
        lookups.check(f"https://hooks.example{path}", allow_private=False)
    assert resolver.asked == ["hooks.example"]

    resolver.answer = [ipaddress.ip_address("10.0.0.1")]  # the name moved inward
    now[0] += CACHE_SECONDS
    with pytest.raises(CallbackUrlForbidden):
        lookups.check("https://hooks.example/a", allow_private=False)
    assert resolver.asked == ["hooks.example"] * 2


def test_the_lookup_timeout_is_a_setting_and_zero_turns_it_off() -> None:
    assert Settings().callback_lookup_timeout == 2.0
    assert Settings.from_env({"BULKAPI_CALLBACK_LOOKUP_TIMEOUT": "0"}).callback_lookup_timeout == 0
    with pytest.raises(ValueError, match="CALLBACK_LOOKUP_TIMEOUT"):
        Settings(callback_lookup_timeout=-1)
