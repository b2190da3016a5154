"""The bulk request's envelope: its fields, the callback URL and the job deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bulkapi.core.errors import ValidationFailed
from bulkapi.core.validation import (
    MAX_DEADLINE,
    MAX_URL_LENGTH,
    Envelope,
    check_callback_url,
    check_envelope,
    parse_deadline,
)

NOW = datetime(2031, 5, 17, 12, 0, 0, tzinfo=UTC)
OPERATIONS = [{"op": "delete", "type": "order", "id": "o-1"}]


def envelope_errors(body: Any) -> dict[str, Any]:
    with pytest.raises(ValidationFailed) as raised:
        check_envelope(body)
    assert raised.value.code == "validation_error"
    return raised.value.errors


def test_envelope_returns_the_operations_and_the_other_fields() -> None:
    body = {
        "operations": OPERATIONS,
        "callback_url": "https://hooks.example.com/x",
        "metadata": {"batch": 7},
        "deadline": 3600,
    }
    operations, envelope = check_envelope(body)
    assert operations == OPERATIONS
    assert envelope == Envelope("https://hooks.example.com/x", {"batch": 7}, 3600)


def test_envelope_with_only_operations_has_no_other_fields() -> None:
    assert check_envelope({"operations": []}) == ([], Envelope())


@pytest.mark.parametrize("body", [[], "x", None, 3], ids=["list", "str", "null", "int"])
def test_envelope_that_is_not_an_object_is_refused(body: Any) -> None:
    envelope_errors(body)


def test_envelope_unknown_field_is_reported_by_name() -> None:
    errors = envelope_errors({"operations": OPERATIONS, "priority": "high"})
    assert set(errors) == {"priority"}


@pytest.mark.parametrize(
    "operations", [None, {"0": {}}, "[]", 1], ids=["null", "object", "string", "int"]
)
def test_envelope_operations_that_are_not_a_list_are_refused(operations: Any) -> None:
    assert set(envelope_errors({"operations": operations})) == {"operations"}


def test_envelope_without_operations_is_refused() -> None:
    assert set(envelope_errors({"metadata": {}})) == {"operations"}


@pytest.mark.parametrize("metadata", [[1], "m", 5, True], ids=["list", "str", "int", "bool"])
def test_envelope_metadata_that_is_not_an_object_is_refused(metadata: Any) -> None:
    assert set(envelope_errors({"operations": OPERATIONS, "metadata": metadata})) == {"metadata"}


def test_envelope_callback_url_that_is_not_a_string_is_refused() -> None:
    errors = envelope_errors({"operations": OPERATIONS, "callback_url": {"url": "x"}})
    assert set(errors) == {"callback_url"}


@pytest.mark.parametrize(
    "deadline", ["2031-05-18T00:00:00Z", 60, 1.5], ids=["timestamp", "int", "float"]
)
def test_envelope_deadline_may_be_a_string_or_a_number(deadline: Any) -> None:
    _, envelope = check_envelope({"operations": OPERATIONS, "deadline": deadline})
    assert envelope.deadline == deadline


@pytest.mark.parametrize(
    "deadline", [True, False, [60], {"seconds": 60}], ids=["true", "false", "list", "object"]
)
def test_envelope_deadline_of_another_type_is_refused(deadline: Any) -> None:
    assert set(envelope_errors({"operations": OPERATIONS, "deadline": deadline})) == {"deadline"}


def test_envelope_reports_every_bad_field_at_once() -> None:
    errors = envelope_errors({"operations": 1, "metadata": 2, "deadline": True, "extra": 0})
    assert set(errors) == {"operations", "metadata", "deadline", "extra"}


@pytest.mark.parametrize(
    "url",
    [
        None,
        "http://hooks.example.com/bulk",
        "https://hooks.example.com:8443/bulk?tenant=acme",
        "https://93.184.216.34/cb",
        "https://[2606:4700:4700::1111]/cb",
    ],
    ids=["none", "http", "https-port-query", "ipv4", "ipv6"],
)
def test_callback_url_absolute_http_or_https_is_accepted(url: str | None) -> None:
    check_callback_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com:99999/x",
        "http://hooks.example.com:65536/x",
        "http://hooks.example.com:0/x",
        "http://hooks.example.com:abc/x",
        "http://hooks.example.com:-1/x",
        "https://[2606:4700:4700::1111]:70000/x",
    ],
    ids=["99999", "65536", "zero", "letters", "negative", "ipv6-too-big"],
)
def test_callback_url_with_a_port_outside_1_to_65535_is_refused(url: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        check_callback_url(url)
    assert raised.value.code == "validation_error"
    assert raised.value.errors == {"callback_url": ["The port must be a number from 1 to 65535."]}


@pytest.mark.parametrize("port", ["1", "65535", ""])
def test_callback_url_ports_1_to_65535_or_none_are_accepted(port: str) -> None:
    check_callback_url(f"https://hooks.example.com:{port}/x")


def test_callback_url_of_exactly_the_maximum_length_is_accepted() -> None:
    base = "https://hooks.example.com/"
    check_callback_url(base + "a" * (MAX_URL_LENGTH - len(base)))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/bulk",
        "hooks.example.com/bulk",
        "/relative/path",
        "http://",
        "https:///path-only",
        "",
        "javascript:alert(1)",
        "https://hooks.example.com/" + "a" * MAX_URL_LENGTH,
    ],
    ids=["ftp", "no-scheme", "relative", "no-host", "empty-host", "empty", "js", "too-long"],
)
def test_callback_url_that_is_not_an_absolute_http_url_is_refused(url: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        check_callback_url(url)
    assert set(raised.value.errors) == {"callback_url"}


@pytest.mark.parametrize(
    "url", ["http://[::1/cb", "https://[not-an-ip]/cb"], ids=["unclosed", "bad-address"]
)
def test_callback_url_with_a_malformed_ip_literal_is_a_validation_error(url: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        check_callback_url(url)
    assert set(raised.value.errors) == {"callback_url"}


def test_deadline_absent_is_none() -> None:
    assert parse_deadline(None, NOW) is None


def test_deadline_rfc_3339_utc_timestamp_is_that_instant() -> None:
    assert parse_deadline("2031-05-18T06:30:00Z", NOW) == datetime(2031, 5, 18, 6, 30, tzinfo=UTC)


def test_deadline_rfc_3339_timestamp_with_an_offset_is_the_same_instant_in_utc() -> None:
    parsed = parse_deadline("2031-05-18T08:30:00.250+02:00", NOW)
    assert parsed == datetime(2031, 5, 18, 6, 30, 0, 250_000, tzinfo=UTC)
    assert parsed is not None
    assert parsed.utcoffset() == timezone(timedelta(hours=2)).utcoffset(None)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(60, 60), (1.5, 1.5), ("90", 90), ("0.25", 0.25), ("1e3", 1000)],
    ids=["int", "float", "int-string", "float-string", "exponent-string"],
)
def test_deadline_in_seconds_counts_from_now(value: Any, seconds: float) -> None:
    assert parse_deadline(value, NOW) == NOW + timedelta(seconds=seconds)


def test_deadline_exactly_the_maximum_ahead_is_accepted() -> None:
    assert parse_deadline(MAX_DEADLINE.total_seconds(), NOW) == NOW + MAX_DEADLINE


@pytest.mark.parametrize(
    "value",
    [
        "2031-05-18T06:30:00",
        "2031-05-18",
        "tomorrow",
        "",
        "2031-13-01T00:00:00Z",
    ],
    ids=["no-zone", "date-only", "words", "empty", "month-13"],
)
def test_deadline_that_is_not_an_rfc_3339_timestamp_with_a_zone_is_refused(value: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        parse_deadline(value, NOW)
    assert set(raised.value.errors) == {"deadline"}


@pytest.mark.parametrize(
    "value",
    [
        "2031-05-17T11:59:59Z",
        "2031-05-17T12:00:00Z",
        "2031-05-17T13:00:00+02:00",
        0,
        -5,
        "-1",
    ],
    ids=["second-ago", "exactly-now", "past-in-another-zone", "zero", "negative", "neg-string"],
)
def test_deadline_not_in_the_future_is_refused(value: Any) -> None:
    with pytest.raises(ValidationFailed) as raised:
        parse_deadline(value, NOW)
    assert set(raised.value.errors) == {"deadline"}


@pytest.mark.parametrize(
    "value",
    [
        MAX_DEADLINE.total_seconds() + 1,
        (NOW + MAX_DEADLINE + timedelta(seconds=1)).isoformat(),
        "2040-01-01T00:00:00Z",
    ],
    ids=["seconds", "timestamp-one-second-over", "timestamp-years-ahead"],
)
def test_deadline_beyond_a_year_is_refused(value: Any) -> None:
    with pytest.raises(ValidationFailed) as raised:
        parse_deadline(value, NOW)
    assert set(raised.value.errors) == {"deadline"}


@pytest.mark.parametrize(
    "value",
    ["nan", "inf", "1e400", float("nan"), float("inf"), 10**30, "9" * 400],
    ids=["nan-str", "inf-str", "huge-str", "nan", "inf", "huge-int", "400-digits"],
)
def test_deadline_that_is_not_a_finite_number_of_seconds_is_refused(value: Any) -> None:
    with pytest.raises(ValidationFailed) as raised:
        parse_deadline(value, NOW)
    assert set(raised.value.errors) == {"deadline"}


@pytest.mark.parametrize(
    "host",
    ["a" * 64 + ".example.com", "hooks..example.com", ".example.com", ("a" * 60 + ".") * 5 + "com"],
    ids=["label-over-63", "empty-label", "leading-dot", "name-over-253"],
)
def test_callback_url_whose_host_no_resolver_could_look_up_is_refused(host: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        check_callback_url(f"https://{host}/x")
    assert raised.value.code == "validation_error"
    assert "callback_url" in raised.value.errors


@pytest.mark.parametrize(
    "host", ["b\u00fccher.example", "a" * 63 + ".example.com", "hooks.example."]
)
def test_callback_url_with_an_international_long_or_rooted_name_is_accepted(host: str) -> None:
    check_callback_url(f"https://{host}/x")
