"""The whole-block check's two shortcuts (fructosa/wire/blocks.py) against the plain rule.

:func:`all_valid` judges a block's numbers on their bits, all datapoints at
once, and remembers the path sets that passed. Neither may let through
anything the per-datapoint rule refuses: a time out of whisper's range or a
non-finite value in any position among many valid ones, or a path set that
differs from a remembered one in a single byte, or that was remembered for
another host.
"""

from __future__ import annotations

import math
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fructosa.graphite_paths import MAX_TIMESTAMP
from fructosa.wire.blocks import Block, _numbers_valid, all_valid, datapoint_problem, times_not_older

PROPERTIES = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

near_limits = st.sampled_from([
    0.0, -0.0, 5e-324, -5e-324, 1.0, -1.0, float(MAX_TIMESTAMP), math.nextafter(MAX_TIMESTAMP, 0),
    math.nextafter(MAX_TIMESTAMP, math.inf), 1.7976931348623157e308, -1.7976931348623157e308,
    math.nan, -math.nan, math.inf, -math.inf, 1.7e9,
])  # fmt: skip
doubles = st.one_of(
    st.floats(), near_limits, st.integers(0, 2**64 - 1).map(lambda n: struct.unpack("<d", n.to_bytes(8, "little"))[0])
)


def exact_rule(times: list[float], values: list[float]) -> bool:
    return all(0 <= when < MAX_TIMESTAMP for when in times) and all(math.isfinite(value) for value in values)


@PROPERTIES
@given(st.lists(st.tuples(doubles, doubles), min_size=1, max_size=40))
def test_the_bits_never_pass_what_the_rule_refuses(numbers: list) -> None:
    block = Block.of([(f"n.s.v{index}", point) for index, point in enumerate(numbers)])
    times, values = [when for when, _ in numbers], [value for _, value in numbers]
    if _numbers_valid(block.times, block.values, len(block)):
        assert exact_rule(times, values)
    elif exact_rule(times, values):  # "look closer": only for -0.0 as a time (its sign bit)
        assert any(math.copysign(1.0, when) < 0 for when in times)
    assert all_valid(block, None) == exact_rule(times, values)


@PROPERTIES
@given(st.integers(1, 600), st.data())
def test_one_bad_number_anywhere_in_a_large_block_is_seen(count: int, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, count - 1))
    bad = data.draw(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, float(MAX_TIMESTAMP), 1e300]))
    in_time = data.draw(st.booleans())
    points = [(f"n.s.v{index}", (1.7e9 + index, float(index))) for index in range(count)]
    path, (when, value) = points[position]
    points[position] = (path, (bad, value) if in_time else (when, bad))
    block = Block.of(points)
    expected = all(datapoint_problem(path, when, value) is None for path, (when, value) in points)
    assert all_valid(block, None) == expected
    assert _numbers_valid(block.times, block.values, count) is False or expected


@PROPERTIES
@given(st.integers(1, 50), st.data())
def test_a_remembered_path_set_does_not_vouch_for_a_changed_one(count: int, data: st.DataObject) -> None:
    points = [(f"node1.Sensor.v{index}", (1.7e9, 1.0)) for index in range(count)]
    block = Block.of(points)
    assert all_valid(block, "node1") and all_valid(Block.decode(block.encode()), "node1")  # now remembered
    assert not all_valid(block, "node2")  # remembered for node1 only
    position = data.draw(st.integers(0, len(block.paths) - 1))
    byte = data.draw(st.sampled_from([b"\n", b".", b" ", b"/", b"\xff", b"\x00", b"X"]))
    changed = Block(block.paths[:position] + byte + block.paths[position + 1 :], block.times, block.values)
    paths = changed.paths.decode("ascii", "replace").split("\n")
    expected = len(paths) == count and all(datapoint_problem(path, 1.7e9, 1.0, "node1") is None for path in paths)
    assert all_valid(changed, "node1") == expected


@PROPERTIES
@given(st.lists(st.tuples(doubles, doubles), min_size=1, max_size=40))
def test_times_not_older_only_when_every_position_is_not_older(pairs: list) -> None:
    newer, older = (
        Block.of([(f"n.s.v{i}", (a, 0.0)) for i, (a, _) in enumerate(pairs)]),
        Block.of([(f"n.s.v{i}", (b, 0.0)) for i, (_, b) in enumerate(pairs)]),
    )
    if times_not_older(newer.times, older.times):
        assert all(0 <= b <= a < MAX_TIMESTAMP for a, b in pairs)
    elif all(0 <= b <= a < MAX_TIMESTAMP for a, b in pairs):  # "look closer": only for -0.0 (its sign bit)
        assert any(math.copysign(1.0, when) < 0 for pair in pairs for when in pair)
