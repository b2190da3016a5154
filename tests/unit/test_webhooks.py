"""Webhook signing, retry delays and target checks (pure core), checked independently."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress

import pytest

from bulkapi.config import Settings
from bulkapi.core.errors import CallbackUrlForbidden, ValidationFailed
from bulkapi.core.validation import check_callback_url
from bulkapi.core.webhooks import (
    forbidden_address,
    forbidden_host,
    signature,
    signed_headers,
    signing_key,
)
from bulkapi.ids import new_secret, new_signing_secret


def _reference_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks, as its spec writes it: key = base64 decode after whsec_."""
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_new_secrets_are_standard_base64_of_32_bytes_and_verify_independently() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:], validate=True)) == 32
    body = b'{"id": "job_1", "status": "succeeded"}'
    assert signature(secret, "msg_1", 1700000000, body) == _reference_signature(
        secret, "msg_1", 1700000000, body
    )


def test_older_urlsafe_unpadded_secrets_still_give_their_32_byte_key() -> None:
    for _ in range(50):  # enough to meet '-' and '_' in the URL-safe alphabet
        secret = new_secret("whsec")
        raw = base64.urlsafe_b64decode(secret[6:] + "=" * (-len(secret[6:]) % 4))
        assert signing_key(secret) == raw and len(raw) == 32


def test_a_secret_that_is_not_base64_is_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        signing_key("whsec_not base64!")


def test_signed_headers_carry_id_timestamp_signature_type_and_agent() -> None:
    secret = new_signing_secret()
    headers = signed_headers(secret, "msg_x", 42, b"{}", "agent/1")
    assert headers["webhook-id"] == "msg_x"
    assert headers["webhook-timestamp"] == "42"
    assert headers["webhook-signature"] == _reference_signature(secret, "msg_x", 42, b"{}")
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "agent/1"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::",
        "2002:a00:1::",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
        "64:ff9b::7f00:1",
        "64:ff9b::a00:1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "localhost",
        "LOCALHOST.",
        "api.localhost",
    ],
)
def test_local_private_and_special_hosts_are_forbidden(host: str) -> None:
    assert forbidden_host(host) is not None


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", "link-local"),  # 6to4 of 169.254.169.254
        ("2001:0:a9fe:a9fe::", "link-local"),  # Teredo, server 169.254.169.254
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ],
)
def test_ipv6_addresses_that_lead_to_an_ipv4_one_are_judged_by_it(host: str, reason: str) -> None:
    assert forbidden_address(ipaddress.ip_address(host)) == reason


@pytest.mark.parametrize(
    "host",
    [
        "hooks.example.com",
        "93.184.216.34",
        "2606:4700:4700::1111",
        "localhost.example",
        "2002:5db8:d822::",
        "64:ff9b::5db8:d822",
    ],
)
def test_public_hosts_and_names_are_not_refused_before_resolution(host: str) -> None:
    assert forbidden_host(host) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.0.0.1:8080/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/x",
        "https://localhost/x",
        "http://user@127.0.0.1/x",
    ],
)
def test_check_callback_url_refuses_forbidden_targets_under_callback_url(url: str) -> None:
    with pytest.raises(CallbackUrlForbidden) as raised:
        check_callback_url(url)
    assert raised.value.code == "callback_url_forbidden"
    assert isinstance(raised.value, ValidationFailed)
    assert list(raised.value.errors) == ["callback_url"]
    check_callback_url(url, allow_private=True)  # the operator may allow them


def test_check_callback_url_accepts_public_names() -> None:
    check_callback_url("https://hooks.example.com/bulk?tenant=acme")


def test_webhook_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "BULKAPI_WEBHOOK_ATTEMPTS": "4",
            "BULKAPI_WEBHOOK_BACKOFF": "0.5",
            "BULKAPI_WEBHOOK_MAX_BACKOFF": "60",
            "BULKAPI_WEBHOOK_TIMEOUT": "3",
            "BULKAPI_WEBHOOK_CONNECT_TIMEOUT": "0.5",
            "BULKAPI_ALLOW_PRIVATE_CALLBACKS": "1",
        }
    )
    assert (settings.webhook_attempts, settings.webhook_backoff) == (4, 0.5)
    assert (settings.webhook_max_backoff, settings.webhook_timeout) == (60.0, 3.0)
    assert settings.webhook_connect_timeout == 0.5
    assert settings.allow_private_callbacks
    defaults = Settings()
    assert not defaults.allow_private_callbacks and defaults.webhook_attempts == 8
    with pytest.raises(ValueError, match="WEBHOOK_ATTEMPTS"):
        Settings(webhook_attempts=0)
    assert defaults.webhook_connect_timeout < defaults.webhook_timeout
    with pytest.raises(ValueError, match="_CONNECT_TIMEOUT"):
        Settings(webhook_connect_timeout=0)
