"""Splitting a block between the carbon-caches of a cluster (fructosa.sinks.cluster.BlockSplitter):
planned once per block shape and cached, yet always exactly the uncached ring's answer."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fructosa.sinks.cluster import BlockSplitter, CarbonClusterSink
from fructosa.sinks.ring import CachedRouter, ConsistentHashRing, Destination, check_ring, parse_destinations
from fructosa.wire.blocks import Block
from tests.test_ring import destination_lists

pytestmark = pytest.mark.timeout(120)

component = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=10)
block_paths = st.lists(st.lists(component, min_size=1, max_size=4).map(".".join), min_size=1, max_size=30)
prefixes = st.sampled_from(["", "fructosa", "site.graphite"])


def expected_parts(ring: ConsistentHashRing, prefix: str, block: Block) -> dict[Destination, list]:
    """What the ring says, datapoint by datapoint, with no cache of any kind."""
    full = f"{prefix}." if prefix else ""
    parts: dict[Destination, list] = {}
    for path, point in block.datapoints():
        for destination in ring.route(full + path):
            parts.setdefault(destination, []).append((path, point))
    return parts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    destinations=destination_lists,
    replication_factor=st.integers(1, 3),
    diverse_replicas=st.booleans(),
    prefix=prefixes,
    shapes=st.lists(block_paths, min_size=1, max_size=4),
    order=st.lists(st.integers(0, 3), min_size=1, max_size=12),
    max_datapoints=st.sampled_from([1, 7, 40, 1 << 18]),
    max_routes=st.sampled_from([1, 5, 1 << 18]),
)
def test_cached_split_is_the_uncached_rings_answer(
    destinations: list[Destination],
    replication_factor: int,
    diverse_replicas: bool,
    prefix: str,
    shapes: list[list[str]],
    order: list[int],
    max_datapoints: int,
    max_routes: int,
) -> None:
    try:
        check_ring(destinations, replication_factor, diverse_replicas)
    except ValueError:
        assume(False)
    ring = ConsistentHashRing(destinations, replication_factor, diverse_replicas)
    splitter = BlockSplitter(CachedRouter(ring, max_routes), prefix, max_datapoints)
    for turn, which in enumerate(order):  # shapes come back, so plans are reused (and evicted when small)
        paths = shapes[which % len(shapes)]
        block = Block.of([(path, (1e9 + turn + i, turn * 1000.0 + i)) for i, path in enumerate(paths)], samples=3)
        parts = splitter.split(block)
        expected = expected_parts(ring, prefix, block)
        assert {destination: part.datapoints() for destination, part in parts.items()} == expected
        for part in parts.values():
            if len(part) == len(block):
                assert part is block  # a destination storing everything gets the block itself
        assert sum(map(len, parts.values())) == len(block) * replication_factor


def test_plans_are_remembered_per_shape_and_bounded() -> None:
    ring = ConsistentHashRing(parse_destinations("127.0.0.1:2004:a, 127.0.0.1:2104:b"))
    splitter = BlockSplitter(CachedRouter(ring), max_datapoints=250)
    shapes = [[f"node{n}.Bench{k}.f0" for k in range(100)] for n in range(4)]
    for n, paths in enumerate(shapes):
        block = Block.of([(path, (1e9, 1.0)) for path in paths])
        first = splitter.split(block)
        assert len(splitter) == (n % 2) + 1  # two shapes of 100 fit in 250 datapoints, a third starts over
        again = splitter.split(Block.of([(path, (2e9, 2.0)) for path in paths]))
        assert {d: [p for p, _ in part.datapoints()] for d, part in again.items()} == {
            d: [p for p, _ in part.datapoints()] for d, part in first.items()
        }
        assert all(when == 2e9 for part in again.values() for _, (when, _) in part.datapoints())
    assert len(first) == 2  # a hundred paths do land on both caches


def test_empty_block_goes_nowhere() -> None:
    ring = ConsistentHashRing(parse_destinations("127.0.0.1:2004:a, 127.0.0.1:2104:b"))
    assert BlockSplitter(CachedRouter(ring)).split(Block()) == {}


def test_the_sink_splits_with_its_prefix() -> None:
    ring = ConsistentHashRing(parse_destinations("127.0.0.1:2004:a, 127.0.0.1:2104:b"))
    sink = CarbonClusterSink(ring, prefix="fructosa")
    block = Block.of([(f"node1.Load.m{i}", (1e9, float(i))) for i in range(50)])
    parts = sink.split(block)
    assert {d: part.datapoints() for d, part in parts.items()} == expected_parts(ring, "fructosa", block)
    assert expected_parts(ring, "fructosa", block) != expected_parts(ring, "", block)  # the prefix does count
