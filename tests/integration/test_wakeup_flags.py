"""The wake-up flags on Redis: one pending wake-up per lane and partition, claimed in bulk."""

from __future__ import annotations

import uuid

import redis

from bulkapi.dispatch.lanes import Lane
from bulkapi.dispatch.scheduled import MemoryFlags, RedisFlags, ScheduledFlags
from tests.support import REDIS_URL, forget_namespace, require_redis


def _redis_flags() -> tuple[RedisFlags, str]:
    require_redis()
    namespace = f"bulkapi-test-{uuid.uuid4().hex[:8]}"
    return RedisFlags(redis.Redis.from_url(REDIS_URL), namespace), namespace


def _claims_once_per_lane_until_released(flags: ScheduledFlags) -> None:
    assert flags.claim_all(Lane.PROMPT, [3, 1, 2]) == [3, 1, 2]
    assert flags.claim_all(Lane.PROMPT, [1, 2, 4]) == [4]  # 1 and 2 are queued already
    assert flags.claim_all(Lane.REGULAR, [1]) == [1]  # another lane, another flag
    flags.release(Lane.PROMPT, 2)
    assert flags.claim_all(Lane.PROMPT, [1, 2, 3]) == [2]
    assert flags.claim_all(Lane.PROMPT, []) == []


def test_redis_flags_claim_each_clear_partition_once_until_its_wakeup_runs() -> None:
    flags, namespace = _redis_flags()
    try:
        _claims_once_per_lane_until_released(flags)
    finally:
        forget_namespace(namespace)


def test_memory_flags_claim_each_clear_partition_once_until_its_wakeup_runs() -> None:
    _claims_once_per_lane_until_released(MemoryFlags())


def test_without_redis_every_partition_is_sent_for() -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    flags = RedisFlags(unreachable, "bulkapi-test-gone")
    assert flags.claim_all(Lane.REGULAR, [5, 6]) == [5, 6]
    flags.release(Lane.REGULAR, 5)  # logged, not raised
