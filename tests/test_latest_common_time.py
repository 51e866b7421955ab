"""Blocks with one time throughout (as lagent sends them) are compared with the held block on that one time
(fructosa/taps/__init__.py ``common_time``, fructosa/taps/latest.py): ``common_time`` must name the time exactly
when every time of the block has the same bits, and the latest-value store must answer what storing every block
in turn gives, whether blocks have one time or several, rising, repeated or falling, checked or not."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fructosa.taps import common_time
from fructosa.taps.latest import LatestValues
from fructosa.wire.blocks import Block, all_valid

pytestmark = pytest.mark.timeout(120)

PROPERTIES = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
LAYOUTS = (("a", "b", "c"), ("a", "b", "c"), ("c", "a"), ("d",))
times = st.sampled_from([0.0, -0.0, 1.0, 2.0, 3.0, 1e9, 1e9 + 0.5])


def test_common_time_names_the_one_time_of_a_block() -> None:
    assert common_time(array("d")) is None
    assert common_time(array("d", [5.0])) == 5.0
    assert common_time(array("d", [1e9 + 0.5] * 500)) == 1e9 + 0.5
    several = array("d", [1e9] * 500)
    several[499] = 1e9 + 1
    assert common_time(several) is None
    several[0] = 1e9 + 1
    assert common_time(array("d", several)) is None
    assert common_time(array("d", [0.0, -0.0])) is None  # equal numbers, other bits: the long way
    assert repr(common_time(array("d", [-0.0, -0.0]))) == "-0.0"
    nan = common_time(array("d", [float("nan")] * 3))
    assert nan is not None and nan != nan


@PROPERTIES
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(LAYOUTS) - 1), times, st.lists(times, min_size=3, max_size=3),
            st.sampled_from(["one time", "one time", "several"]), st.booleans(), st.booleans(),
        ),
        min_size=1, max_size=30,
    )
)  # fmt: skip
def test_answers_are_those_of_storing_every_block_in_turn(sequence: list) -> None:
    store = LatestValues()
    expected: dict[str, tuple[float, float]] = {}
    for number, (layout, one, several, kind, checked, read) in enumerate(sequence):
        paths = LAYOUTS[layout]
        stamps = [one] * len(paths) if kind == "one time" else several[: len(paths)]
        block = Block.of([(f"node1.S.{name}", (stamps[i], float(number))) for i, name in enumerate(paths)])
        if checked:
            assert all_valid(block, "node1")  # the block check's bits come with it (not on -0.0)
        for path, (when, value) in block.datapoints():
            if path not in expected or when >= expected[path][0]:
                expected[path] = (when, value)
        store.observe(block, "node1")
        if read:  # reads in between store what is held
            assert store.latest("node1") == expected
    assert store.latest("node1") == expected
    assert store.get("node1", "S.a") == expected.get("node1.S.a")


def test_a_block_with_an_older_one_time_does_not_replace_the_held_one() -> None:
    store = LatestValues()
    store.observe(Block.of([("n.S.a", (20.0, 1.0)), ("n.S.b", (20.0, 2.0))]), "n")
    store.observe(Block.of([("n.S.a", (10.0, 3.0)), ("n.S.b", (10.0, 4.0))]), "n")  # a resend from the spool
    store.observe(Block.of([("n.S.a", (20.0, 5.0)), ("n.S.b", (10.0, 6.0))]), "n")  # several times
    assert store.latest("n") == {"n.S.a": (20.0, 5.0), "n.S.b": (20.0, 2.0)}
