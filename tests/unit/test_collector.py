"""The shared pause of the cycle collector around large bodies."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bulkapi.api import collector
from bulkapi.api.collector import LARGE, collector_paused


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    assert gc.isenabled()
    yield
    gc.enable()


def test_a_large_body_pauses_the_collector_until_its_last_holder_leaves() -> None:
    with collector_paused(LARGE):
        assert not gc.isenabled()
        with collector_paused(LARGE):
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_small_body_leaves_the_collector_running() -> None:
    with collector_paused(LARGE - 1):
        assert gc.isenabled()


def test_a_pause_that_lasted_too_long_takes_no_new_holder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = collector_paused(LARGE)
    first.__enter__()
    monkeypatch.setattr(collector, "MAX_PAUSE", 0.0)
    late = collector_paused(LARGE)
    late.__enter__()
    first.__exit__(None, None, None)
    assert gc.isenabled()  # the late request did not keep the pause going
    late.__exit__(None, None, None)
    assert gc.isenabled()


def test_the_collector_comes_back_even_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), collector_paused(LARGE):
        raise RuntimeError("refused")
    assert gc.isenabled()
