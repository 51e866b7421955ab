"""The block check keeps its time bits on the block (Block.time_lanes), and the latest-value store judges
whether a block supersedes the held one from them (fructosa/wire/blocks.py, fructosa/taps/latest.py): the bits
must be exactly those of the block's times, only on blocks whose times the check found in range, and the store
must answer what storing every checked block in turn gives."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fructosa.master.flow import Flow
from fructosa.taps import Tap
from fructosa.taps.latest import LatestValues
from fructosa.wire.blocks import Block, all_valid

pytestmark = pytest.mark.timeout(120)

PROPERTIES = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
LAYOUTS = (("a", "b", "c"), ("a", "b", "c"), ("c", "a"), ("d",))
times = st.sampled_from([0.0, -0.0, 1.0, 2.0, 2.0, 3.0, 1e9, 1e9 + 0.5, -1.0, 1e300])


def test_the_check_keeps_the_bits_of_valid_times_only() -> None:
    valid = Block.of([("n.S.a", (1e9, 1.0)), ("n.S.b", (1e9 + 0.5, 2.0))])
    assert valid.time_lanes is None
    assert all_valid(valid, "n")
    assert valid.time_lanes == int.from_bytes(valid.times, "little")
    assert valid == Block.of([("n.S.a", (1e9, 1.0)), ("n.S.b", (1e9 + 0.5, 2.0))])  # not part of equality
    assert "time_lanes" not in repr(valid)
    for when in (-1.0, 1e300, float("nan")):
        invalid = Block.of([("n.S.a", (when, 1.0))])
        assert not all_valid(invalid, "n")
        assert invalid.time_lanes is None
    infinite_value = Block.of([("n.S.a", (1e9, float("inf")))])
    assert not all_valid(infinite_value, "n")
    assert infinite_value.time_lanes is None


@PROPERTIES
@given(st.lists(st.tuples(st.integers(0, len(LAYOUTS) - 1), st.lists(times, min_size=3, max_size=3)),
                min_size=1, max_size=25))  # fmt: skip
def test_answers_are_those_of_storing_every_checked_block_in_turn(sequence: list) -> None:
    store = LatestValues()
    expected: dict[str, tuple[float, float]] = {}
    for number, (layout, block_times) in enumerate(sequence):
        paths = LAYOUTS[layout]
        block = Block.of([(f"node1.S.{name}", (block_times[i], float(number))) for i, name in enumerate(paths)])
        if not all_valid(block, "node1"):
            continue  # lmaster keeps the valid datapoints of such a block, through another path
        for path, (when, value) in block.datapoints():
            if path not in expected or when >= expected[path][0]:
                expected[path] = (when, value)
        store.observe(block, "node1")
        if number % 5 == 4:  # reads in between store what is held
            assert (store.latest("node1") or {}) == expected
    assert (store.latest("node1") or {}) == expected
    assert store.get("node1", "S.a") == expected.get("node1.S.a")


def test_the_flow_hands_the_bits_to_the_taps_and_not_to_the_sinks_keeping() -> None:
    """The taps see the check's bits; the block a sink keeps for seconds no longer carries them."""

    class Held:
        """A sink that keeps what it is given (as the carbon sink does for seconds)."""

        name = "held"

        def __init__(self) -> None:
            self.blocks: list[Block] = []

        def submit(self, block: Block, on_safe: Callable[[], None] | None = None) -> None:
            self.blocks.append(block)
            if on_safe is not None:
                on_safe()

    class Seeing(Tap):
        def __init__(self) -> None:
            self.seen: list[int | None] = []

        def observe(self, block: Block, host: str | None) -> None:
            self.seen.append(block.time_lanes)

    sink, tap = Held(), Seeing()
    flow = Flow([sink], [tap])  # type: ignore[list-item]
    try:
        block = Block.of([("n.S.a", (1e9, 1.0)), ("n.S.b", (1e9 + 0.5, 2.0))])
        assert all_valid(block, "n")
        safe: list[bool] = []
        flow.deliver(block, "n", lambda: safe.append(True))
        assert tap.seen == [int.from_bytes(block.times, "little")]
        assert safe == [True] and sink.blocks == [block]
        assert sink.blocks[0].time_lanes is None
    finally:
        flow.close()
