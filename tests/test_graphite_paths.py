"""Properties of the one flattening function (sample → Graphite datapoints)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fructosa.graphite_paths import (
    MAX_DEPTH,
    SampleError,
    is_valid_path,
    sample_to_datapoints,
    sanitize_component,
    short_hostname,
)

keys = st.one_of(st.text(max_size=12), st.integers(min_value=-5, max_value=10_000))
leaves = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=30,
)
samples = st.fixed_dictionaries(
    {
        "host": st.text(min_size=1, max_size=20),
        "sensor": st.text(min_size=1, max_size=20),
        "time": st.floats(min_value=0, max_value=4e9),
        "value": values,
    }
)


def numeric_leaves(value: object) -> int:
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 1 if math.isfinite(float(value)) else 0
    if isinstance(value, dict):
        return sum(numeric_leaves(child) for child in value.values())
    if isinstance(value, list):
        return sum(numeric_leaves(child) for child in value)
    return 0


@given(samples)
def test_every_path_is_a_valid_graphite_path(sample: dict) -> None:
    for path, (timestamp, number) in sample_to_datapoints(sample):
        assert is_valid_path(path), path
        assert timestamp == sample["time"]
        assert math.isfinite(number)


@given(samples)
def test_flattening_is_deterministic(sample: dict) -> None:
    assert sample_to_datapoints(sample) == sample_to_datapoints(dict(sample))


@given(samples)
def test_distinct_keys_never_collide(sample: dict) -> None:
    """One datapoint per finite numeric leaf, and no two share a path."""
    datapoints = sample_to_datapoints(sample)
    paths = [path for path, _ in datapoints]
    assert len(paths) == len(set(paths))
    assert len(datapoints) == numeric_leaves(sample["value"])


@given(keys)
def test_sanitized_component_is_one_safe_word(key: object) -> None:
    component = sanitize_component(key)
    assert component and "." not in component and " " not in component and "/" not in component
    assert is_valid_path(component)


def test_flat_dicts_keep_the_paths_of_0_3_2() -> None:
    sample = {"host": "node45-001.cluster.example", "sensor": "CPUPercent", "time": 10.0, "value": {0: 1.5, 3: 2.5}}
    assert sample_to_datapoints(sample) == [
        ("node45-001.CPUPercent.0", (10.0, 1.5)),
        ("node45-001.CPUPercent.3", (10.0, 2.5)),
    ]
    number = {"host": "n1", "sensor": "BootTime", "time": 1, "value": 1700000000}
    assert sample_to_datapoints(number) == [("n1.BootTime", (1.0, 1700000000.0))]


def test_booleans_numbers_strings_and_prefix() -> None:
    sample = {"host": "n1", "sensor": "NetIFStats", "time": 5, "value": {"eth0": {"isup": True, "flags": "up"}}}
    assert sample_to_datapoints(sample, prefix="cluster.a") == [("cluster.a.n1.NetIFStats.eth0.isup", (5.0, 1.0))]


def test_colliding_keys_are_told_apart_in_sorted_order() -> None:
    value = {"Core 0": 1, "Core_0": 2, "Core/0": 3}
    paths = dict(sample_to_datapoints({"host": "n", "sensor": "T", "time": 0, "value": value}))
    assert paths == {"n.T.Core_0": (0.0, 1.0), "n.T.Core_0_2": (0.0, 3.0), "n.T.Core_0_3": (0.0, 2.0)}


def test_short_hostname() -> None:
    assert short_hostname("node01.hpc.uni-frankfurt.de") == "node01"
    assert short_hostname("weird host") == "weird_host"


@pytest.mark.parametrize(
    "sample, reason",
    [
        ([1, 2], "not a dict"),
        ({"host": "n", "sensor": "s"}, "no 'time'"),
        ({"host": 3, "sensor": "s", "time": 1}, "must be strings"),
        ({"host": "n", "sensor": "s", "time": float("nan")}, "not a Unix time"),
        ({"host": "n", "sensor": "s", "time": 10**400}, "not a Unix time"),
        ({"host": "n", "sensor": "s" * 300, "time": 1}, "path component of 300 characters"),
    ],
)
def test_malformed_samples_are_refused_with_a_reason(sample: object, reason: str) -> None:
    with pytest.raises(SampleError, match=reason):
        sample_to_datapoints(sample)


def test_hostile_shapes_are_bounded() -> None:
    """Deep nesting, self-reference and shared-reference blow-ups stop early."""
    deep: list = [1.0]
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(SampleError, match="nested deeper"):
        sample_to_datapoints({"host": "n", "sensor": "s", "time": 0, "value": deep})
    loop: list = []
    loop.append(loop)
    with pytest.raises(SampleError):
        sample_to_datapoints({"host": "n", "sensor": "s", "time": 0, "value": loop})
    shared: list = [1.0] * 8
    for _ in range(7):  # 8**8 = 16M leaves if expanded
        shared = [shared] * 8
    with pytest.raises(SampleError, match="more than"):
        sample_to_datapoints({"host": "n", "sensor": "s", "time": 0, "value": shared})
