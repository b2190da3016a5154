"""Bounded host name lookups (``bulkapi/resolver.py``), with resolvers the tests supply."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from bulkapi.core.webhooks import IPAddress
from bulkapi.resolver import lookup, system_addresses
from tests.support import WAIT_SECONDS


def test_a_lookup_gives_the_resolvers_answer() -> None:
    answer = [ipaddress.ip_address("93.184.216.34")]
    assert lookup("hooks.example", WAIT_SECONDS, lambda host: answer) == answer


def test_a_failed_lookup_raises_the_resolvers_error() -> None:
    def failing(host: str) -> list[IPAddress]:
        raise OSError(f"{host}: Name or service not known")

    with pytest.raises(OSError, match="not known"):
        lookup("hooks.example", WAIT_SECONDS, failing)


def test_a_lookup_that_hangs_is_given_up_at_its_timeout() -> None:
    release = threading.Event()

    def hanging(host: str) -> list[IPAddress]:
        release.wait(WAIT_SECONDS)
        return []

    try:
        with pytest.raises(TimeoutError, match=r"looking up hooks\.example took longer"):
            lookup("hooks.example", 0.2, hanging)
    finally:
        release.set()


def test_no_time_left_is_a_timeout_without_a_lookup() -> None:
    def unexpected(host: str) -> list[IPAddress]:
        raise AssertionError("looked up")

    with pytest.raises(TimeoutError):
        lookup("hooks.example", 0, unexpected)


def test_the_system_resolver_reads_names_this_machine_knows() -> None:
    found = system_addresses("localhost")
    assert found and all(address.is_loopback for address in found)
