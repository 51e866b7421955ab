"""lagent's sample layouts: a remembered layout gives exactly the block full flattening gives.

The agent flattens a sensor's sample in full once and then only collects the
values of samples of the same shape (fructosa.agent.layouts); these tests
compare it, sample after sample, with :func:`sample_to_datapoints` followed by
``Block.of``, over random nested samples, repeated shapes, changed leaves and
changed shapes.
"""

from __future__ import annotations

import asyncio
import itertools
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fructosa.agent.layouts import LayoutCache
from fructosa.agent.sender import encode_batches
from fructosa.graphite_paths import SampleError, sample_to_datapoints
from fructosa.wire import protocol
from fructosa.wire.blocks import Block

leaves = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**64), 2**64) | st.sampled_from([10**400, -(10**400), 2**1023 * 3]),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
    st.binary(max_size=2),
)
keys = st.one_of(
    st.sampled_from(["a", "b", "a.b", "a b", "a_b", "_", "", "1", "True", "user", "é"]),
    st.integers(-3, 3),
    st.booleans(),
    st.floats(allow_nan=False, min_value=-2, max_value=2),
    st.text(max_size=4),
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.dictionaries(keys, children, max_size=5),
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
    ),
    max_leaves=25,
)


def full_block(host: str, sensor: str, when: float, value: object) -> Block | None:
    """What lagent sent before layouts: None when the sample is refused."""
    try:
        datapoints = sample_to_datapoints({"host": host, "sensor": sensor, "time": when, "value": value})
    except SampleError:
        return None
    return Block.of(datapoints, samples=1)


def relabel(value: object, replacements: itertools.cycle) -> object:
    """``value`` with every leaf replaced by the next of ``replacements``: same containers, other leaves."""
    if isinstance(value, dict):
        return {key: relabel(child, replacements) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(relabel(child, replacements) for child in value)
    return next(replacements)


def through_cache(cache: LayoutCache, host: str, sensor: str, when: float, value: object) -> Block | None:
    """What lagent's ``record`` does: the remembered layout, else full flattening (and learning)."""
    block = cache.block(host, sensor, when, value)
    if block is not None:
        return block
    try:
        datapoints = sample_to_datapoints({"host": host, "sensor": sensor, "time": when, "value": value})
    except SampleError:
        return None
    return cache.learn(host, sensor, value, datapoints)


def same_block(got: Block | None, expected: Block | None) -> bool:
    if got is None or expected is None:
        return got is expected
    return got.encode() == expected.encode() and got.samples == expected.samples == 1


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(values, min_size=1, max_size=4),
    st.lists(st.lists(leaves, min_size=1, max_size=6), max_size=3),
    st.sampled_from(["node01", "n.x.y", "gpu-7"]),
    st.sampled_from(["CPUTimes", "Disk Usage", "x"]),
    st.floats(0, 2**32 - 1),
)
def test_a_remembered_layout_gives_what_full_flattening_gives(
    samples: list, leaf_sets: list[list], host: str, sensor: str, when: float
) -> None:
    cache = LayoutCache()
    sequence = []
    for value in samples:  # each shape: itself, again, then with other leaves (values, types, non-finite)
        sequence += [value, value]
        sequence += [relabel(value, itertools.cycle(leaf_set)) for leaf_set in leaf_sets]
    for value in sequence:
        assert same_block(through_cache(cache, host, sensor, when, value), full_block(host, sensor, when, value))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text("abcxyz0189", min_size=1, max_size=4), st.floats(-1e6, 1e6) | st.integers(-1000, 1000), max_size=8
    )
)
def test_the_same_shape_is_not_flattened_again(value: dict) -> None:
    cache = LayoutCache()
    through_cache(cache, "node01", "VirtualMemory", 1.7e9, value)
    expected = full_block("node01", "VirtualMemory", 1.7e9 + 1, value)
    assert same_block(cache.block("node01", "VirtualMemory", 1.7e9 + 1, value), expected)
    assert cache.hits == 1


def test_a_changed_key_order_or_key_type_is_flattened_in_full() -> None:
    cache = LayoutCache()
    through_cache(cache, "h", "S", 10.0, {"a": 1.0, "b": 2.0})
    assert cache.block("h", "S", 11.0, {"b": 2.0, "a": 1.0}) is None
    through_cache(cache, "h", "S", 10.0, {1: 1.0, 2: 2.0})
    assert cache.block("h", "S", 11.0, {True: 1.0, 2: 2.0}) is None  # True == 1, but its path is "True"
    assert cache.block("h", "S", 11.0, {1: math.nan, 2: 2.0}) is None  # full flattening leaves NaN out
    assert cache.block("h", "S", 11.0, {1: "text", 2: 2.0}) is None
    assert same_block(cache.block("h", "S", 11.0, {1: 5, 2: True}), full_block("h", "S", 11.0, {1: 5, 2: True}))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 400), min_size=1, max_size=40), st.integers(0, 2))
def test_batches_of_remembered_blocks_carry_the_datapoints_in_order_within_the_frame_cap(
    sizes: list[int], long_paths: int
) -> None:
    cache = LayoutCache()
    key = "k" * (90 * long_paths + 1)
    samples = []
    for index, size in enumerate(sizes):
        value = {key: {f"{key}{leaf}": float(index * 1000 + leaf) for leaf in range(size)}}
        block = through_cache(cache, "node01", f"S{index % 3}", 1.7e9 + index, value)
        assert block is not None
        samples.append(block)
    counter = itertools.count()
    bodies = encode_batches(samples, lambda: next(counter).to_bytes(protocol.BATCH_ID_SIZE, "big"))
    blocks = [Block.decode(body[protocol.BATCH_ID_SIZE :]) for body in bodies]
    assert all(len(body) <= protocol.MAX_FRAME - 1 for body in bodies)
    expected = [point for sample in samples for point in sample.datapoints()]
    assert [point for block in blocks for point in block.datapoints()] == expected
    assert sum(block.samples for block in blocks) == (len(samples) if expected else 0)
    assert all(len(block) for block in blocks)


def test_an_agent_records_blocks_equal_to_full_flattening() -> None:
    from fructosa.agent import Agent
    from fructosa.config import AgentConfig

    async def scenario() -> list[Block]:
        agent = Agent(AgentConfig(path="x", master_host="127.0.0.1", master_port=1, hostname="node01.example"))
        for tick in range(3):
            agent.record("DiskIOCounters", {"sda": {"read_count": tick, "busy": 1.5}, "sdb": {"read_count": 2}})
        return agent.queue.take(10)

    blocks = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert [block.path_list() for block in blocks] == [["node01.DiskIOCounters.sda.read_count",
        "node01.DiskIOCounters.sda.busy", "node01.DiskIOCounters.sdb.read_count"]] * 3  # fmt: skip
    assert [list(block.values) for block in blocks] == [[0.0, 1.5, 2.0], [1.0, 1.5, 2.0], [2.0, 1.5, 2.0]]


def test_a_sample_over_the_frame_cap_is_split_across_batches() -> None:
    cache = LayoutCache()
    key = "k" * 190
    value = {key: {f"{key}{leaf}": float(leaf) for leaf in range(6000)}}  # ~2.3 MB of paths
    samples = [through_cache(cache, "node01", "Big", 1.7e9 + tick, value) for tick in range(2)]
    assert cache.hits == 1 and all(sample is not None for sample in samples)
    counter = itertools.count()
    bodies = encode_batches(samples, lambda: next(counter).to_bytes(protocol.BATCH_ID_SIZE, "big"))
    blocks = [Block.decode(body[protocol.BATCH_ID_SIZE :]) for body in bodies]
    assert len(bodies) > 2 and all(len(body) <= protocol.MAX_FRAME - 1 for body in bodies)
    assert [point for block in blocks for point in block.datapoints()] == [
        point for sample in samples for point in sample.datapoints()
    ]
    assert [block.samples for block in blocks] == [2] + [0] * (len(blocks) - 1)
