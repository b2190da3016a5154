"""Resource keys and the stable partition function."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkapi.core.keys import ResourceKey, is_valid_id, is_valid_type, partition_of

#: The patterns exactly as docs/api.md writes them, kept apart from the code under test.
CONTRACT_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
CONTRACT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

types = st.from_regex(CONTRACT_TYPE, fullmatch=True)
ids = st.from_regex(CONTRACT_ID, fullmatch=True)
keys = st.builds(ResourceKey, types, ids)
tenants = st.text(min_size=1, max_size=40)


@pytest.mark.parametrize(
    "value",
    ["a", "a" * 64, "order_items", "line-item", "v2", "a0_-"],
    ids=["one-letter", "64-chars", "underscore", "dash", "digit-after-letter", "all-classes"],
)
def test_type_matching_the_spec_pattern_is_valid(value: str) -> None:
    assert is_valid_type(value)


@pytest.mark.parametrize(
    "value",
    ["", "a" * 65, "1order", "_order", "-order", "Order", "orDer", "a.b", "a:b", "a b", "a\n", "é"],
    ids=[
        "empty",
        "65-chars",
        "leading-digit",
        "leading-underscore",
        "leading-dash",
        "leading-uppercase",
        "inner-uppercase",
        "dot",
        "colon",
        "space",
        "trailing-newline",
        "non-ascii",
    ],
)
def test_type_outside_the_spec_pattern_is_invalid(value: str) -> None:
    assert not is_valid_type(value)


@pytest.mark.parametrize(
    "value",
    ["x", "x" * 128, "1abc", "ABC", "a.b:c-d_e", "123", "urn:ex:1", "...", ".a", "..a"],
    ids=[
        "one-char",
        "128-chars",
        "leading-digit",
        "uppercase",
        "all-classes",
        "digits",
        "colons",
        "three-dots",
        "leading-dot",
        "leading-dots",
    ],
)
def test_id_matching_the_spec_pattern_is_valid(value: str) -> None:
    assert is_valid_id(value)


@pytest.mark.parametrize(
    "value",
    ["", "x" * 129, "a/b", "a b", "a\n", "é", "a?b", "a%20", ".", ".."],
    ids=[
        "empty",
        "129-chars",
        "slash",
        "space",
        "trailing-newline",
        "non-ascii",
        "query",
        "pct",
        "dot-segment",
        "dot-dot-segment",
    ],
)
def test_id_outside_the_spec_pattern_is_invalid(value: str) -> None:
    assert not is_valid_id(value)


@pytest.mark.parametrize("value", [None, 7, b"abc", ["a"]], ids=["none", "int", "bytes", "list"])
def test_non_string_type_and_id_are_invalid(value: object) -> None:
    assert not is_valid_type(value)
    assert not is_valid_id(value)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=70))
def test_type_validity_agrees_with_the_spec_pattern_for_any_text(value: str) -> None:
    assert is_valid_type(value) == (CONTRACT_TYPE.fullmatch(value) is not None)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=140), ids))
def test_id_validity_agrees_with_the_spec_pattern_for_any_text(value: str) -> None:
    """The pattern, less the two dot segments no URL can name."""
    expected = CONTRACT_ID.fullmatch(value) is not None and value not in (".", "..")
    assert is_valid_id(value) == expected


@settings(max_examples=100, deadline=None)
@given(tenants, keys, st.integers(min_value=1, max_value=4096))
def test_partition_is_within_range(tenant: str, key: ResourceKey, partitions: int) -> None:
    assert 0 <= partition_of(tenant, key, partitions) < partitions


@settings(max_examples=100, deadline=None)
@given(tenants, keys, st.integers(min_value=1, max_value=4096))
def test_partition_is_the_same_on_every_call(
    tenant: str, key: ResourceKey, partitions: int
) -> None:
    first = partition_of(tenant, key, partitions)
    assert all(partition_of(tenant, ResourceKey(*key), partitions) == first for _ in range(3))


def test_partition_is_the_same_in_a_fresh_interpreter_with_another_hash_seed() -> None:
    cases = [
        ["acme", "order", "o-1", 16],
        ["acme", "order", "o-2", 16],
        ["globex", "customer", "C:42", 7],
        ["tenant-ü", "line_item", "x" * 128, 1024],
        ["t", "a", "1", 3],
    ]
    probe = (
        "import json, sys\n"
        "from bulkapi.core.keys import ResourceKey, partition_of\n"
        "cases = json.loads(sys.argv[1])\n"
        "print(json.dumps([partition_of(t, ResourceKey(k, i), n) for t, k, i, n in cases]))\n"
    )
    here = [partition_of(t, ResourceKey(k, i), n) for t, k, i, n in cases]
    for seed in ("0", "12345"):
        completed = subprocess.run(
            [sys.executable, "-c", probe, json.dumps(cases)],
            cwd=Path(__file__).parents[2],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert json.loads(completed.stdout) == here


@settings(max_examples=60, deadline=None)
@given(
    tenants,
    types,
    st.from_regex(r"[A-Za-z._:-]{0,20}", fullmatch=True),
    st.integers(min_value=2, max_value=64),
)
def test_partitions_spread_many_keys_over_every_partition(
    tenant: str, rtype: str, prefix: str, partitions: int
) -> None:
    per_partition = 40
    counts = Counter(
        partition_of(tenant, ResourceKey(rtype, f"{prefix}{n}"), partitions)
        for n in range(per_partition * partitions)
    )
    assert set(counts) == set(range(partitions))
    assert max(counts.values()) <= 3 * per_partition
