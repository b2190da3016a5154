"""Settings from the environment: what an operator mistypes is named, not a traceback."""

from __future__ import annotations

import pytest

from bulkapi.config import Settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BULKAPI_PARTITIONS": "abc"}, "BULKAPI_PARTITIONS must be an integer, not 'abc'"),
        ({"BULKAPI_EFFECT_BACKOFF": "soon"}, "BULKAPI_EFFECT_BACKOFF must be a number"),
        ({"BULKAPI_STRICT_TYPES": "maybe"}, "BULKAPI_STRICT_TYPES must be 1 or 0"),
        ({"BULKAPI_EFFECT_ATTEMPTS": "0"}, "effect attempts"),
        ({"BULKAPI_EFFECT_BACKOFF": "-1"}, "BULKAPI_EFFECT_BACKOFF must be >= 0"),
        ({"BULKAPI_HEADER_TIMEOUT": "0"}, "BULKAPI_HEADER_TIMEOUT must be > 0"),
        ({"BULKAPI_BODY_TIMEOUT": "-1"}, "BULKAPI_BODY_TIMEOUT and BULKAPI_HEADER_TIMEOUT"),
        ({"BULKAPI_RATE_LIMIT": "lots"}, "BULKAPI_RATE_LIMIT must read like '200/second'"),
        ({"BULKAPI_RATE_LIMIT": "0/second"}, "BULKAPI_RATE_LIMIT must allow at least 1"),
        ({"BULKAPI_RATE_SYNC_INTERVAL": "0"}, "BULKAPI_RATE_SYNC_INTERVAL must be > 0"),
        ({"BULKAPI_SEND_TIMEOUT": "0"}, "BULKAPI_SEND_TIMEOUT must be > 0"),
        ({"BULKAPI_SEND_BUFFER": "-1"}, "BULKAPI_SEND_BUFFER must be >= 0"),
        ({"BULKAPI_DRAIN_GROUP": "0"}, "BULKAPI_DRAIN_GROUP must be >= 1"),
    ],
)
def test_a_bad_value_is_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("raw", "strict"), [("1", True), ("true", True), ("0", False), ("", False), ("off", False)]
)
def test_strict_types_reads_the_usual_spellings(raw: str, strict: bool) -> None:
    assert Settings.from_env({"BULKAPI_STRICT_TYPES": raw}).strict_types is strict


def test_effect_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({"BULKAPI_EFFECT_ATTEMPTS": "7", "BULKAPI_EFFECT_BACKOFF": "0.5"})
    assert (settings.effect_attempts, settings.effect_backoff) == (7, 0.5)
    defaults = Settings.from_env({})
    assert (defaults.effect_attempts, defaults.effect_backoff) == (5, 1.0)


def test_time_limits_come_from_the_environment() -> None:
    settings = Settings.from_env({"BULKAPI_BODY_TIMEOUT": "3", "BULKAPI_HEADER_TIMEOUT": "1.5"})
    assert (settings.body_timeout, settings.header_timeout) == (3.0, 1.5)
    assert (Settings().body_timeout, Settings().header_timeout) == (30.0, 10.0)


def test_the_drain_group_comes_from_the_environment() -> None:
    assert Settings.from_env({"BULKAPI_DRAIN_GROUP": "4"}).drain_group == 4
