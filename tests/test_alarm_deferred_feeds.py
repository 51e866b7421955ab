"""A quiet node key's feed is written into its series only when something reads them, and a block with one time
throughout is judged fresh or stale on that time alone (fructosa/alarms/matching.py ``RuleRuntime.feed_quietly``,
fructosa/alarms/evaluator.py): whatever blocks come (the same layouts again and again, layouts feeding part of a
key's paths, values that hold or not, NaN and -0.0, one time or several, stale or fresh, prunes between reads),
every state, the rules' current values, every transition and the count of stale datapoints must be what an
evaluator gives that writes every value into its series at once, builds every key's state at every block and
picks the times of every block."""

from __future__ import annotations

import math
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fructosa.alarms import evaluator as evaluator_module
from fructosa.alarms.evaluator import AlarmEvaluator
from fructosa.alarms.rules import State
from fructosa.wire.blocks import Block
from tests.support.alarm_reference import NODES, NOW, PROPERTIES, RULES, STALE_AFTER, engine, same

pytestmark = pytest.mark.timeout(120)

LAYOUTS = (("S.b", "S.a"), ("S.b", "S.a"), ("S.b",), ("S.a", "S.c", "T.a"), ("S.c", "S.b", "S.c"))
"""Paths below a node, as blocks bring them: the same layout over and over, another one with the same paths, one
feeding part of a key's paths, one feeding several rules, and one with a path twice."""
quiet = st.sampled_from([0.5, 1.0, 2.0, 3.0, 4.0])
values = st.one_of(quiet, quiet, quiet, st.sampled_from([-1.0, -0.0, 0.0, 5.0, 7.5, math.nan]))
TIMES = ("one fresh", "one stale", "one fresh, older", "several")
step = st.one_of(
    st.tuples(
        st.just("block"),
        st.tuples(st.sampled_from(NODES), st.integers(0, len(LAYOUTS) - 1), st.lists(values, min_size=3, max_size=3),
                  st.sampled_from(TIMES), st.lists(st.booleans(), min_size=3, max_size=3)),
        st.integers(0, 4000),
    ),
    st.tuples(st.just("read"), st.just(None), st.just(0)),
    st.tuples(st.just("tick"), st.just(None), st.integers(0, 200)),
)  # fmt: skip


def observe_building(evaluator: AlarmEvaluator, block: Block, host: str) -> None:
    """The reference picks the matching times of every block, never asking whether it has one time."""
    with mock.patch.object(evaluator_module, "common_time", lambda times: None):
        evaluator.observe(block, host)


def block_of(node: str, layout: int, numbers: list[float], times: str, stale: list[bool], now: float) -> Block:
    paths = LAYOUTS[layout]
    if times == "several":
        stamps = [now - (2 * STALE_AFTER if old else 0.0) - index for index, old in enumerate(stale[: len(paths)])]
    else:
        stamp = {"one fresh": now, "one stale": now - 2 * STALE_AFTER, "one fresh, older": now - STALE_AFTER / 2}
        stamps = [stamp[times]] * len(paths)
    points = zip(paths, stamps, numbers[: len(paths)], strict=True)
    return Block.of([(f"{node}.{path}", (when, value)) for path, when, value in points])


@PROPERTIES
@given(st.lists(step, min_size=1, max_size=40))
def test_deferred_feeds_read_as_feeds_written_at_once(steps: list) -> None:
    clock = [NOW]
    deferring, deferring_seen = engine(clock, deferring=True)
    building, building_seen = engine(clock, deferring=False)
    for kind, arguments, advance in steps:
        if kind == "block":
            clock[0] += advance / 10
            node = arguments[0]
            block = block_of(*arguments, now=clock[0])
            deferring.observe(block, node)
            observe_building(building, block, node)
        elif kind == "tick":
            clock[0] += advance
            deferring.tick()
            building.tick()
        else:
            for name, *_ in RULES:
                assert same(deferring.states(name), building.states(name)), name
                assert repr(deferring.current(name)) == repr(building.current(name)), name
        assert [repr(t) for t in deferring_seen] == [repr(t) for t in building_seen]
        assert deferring.ignored_stale == building.ignored_stale
    clock[0] += STALE_AFTER / 2
    deferring.tick()  # a prune with what was deferred: series left and gone must be the same
    building.tick()
    for name, *_ in RULES:
        assert same(deferring.states(name), building.states(name)), name
    assert [repr(t) for t in deferring_seen] == [repr(t) for t in building_seen]


def test_a_feed_of_another_layout_is_written_before_the_next_one_is_deferred() -> None:
    clock = [NOW]
    evaluator, seen = engine(clock, deferring=True)

    def feed(*points: tuple[str, float]) -> None:
        clock[0] += 1
        evaluator.observe(Block.of([(f"n1.{path}", (clock[0], value)) for path, value in points]), "n1")

    feed(("S.b", 1.0), ("S.a", 2.0))  # a new key: built; its series in the order b, a
    feed(("S.b", 3.0), ("S.a", 4.0))  # quiet: deferred
    feed(("S.b", 3.5))  # quiet, another layout: the feed before is written first, this one deferred
    assert evaluator.runtimes["gt"].deferred["n1"][1] == (3.5,)
    assert evaluator.states("gt")["n1"].value == 4.0  # a's value, the last series', from the block before
    feed(("S.b", 2.5), ("S.a", 1.5))
    feed(("S.b", 2.0), ("S.a", 0.5))  # the same layout again: replaces the one deferred
    assert evaluator.states("gt")["n1"].value == 0.5
    assert seen == [] and evaluator.runtimes["gt"].deferred == {}


def test_a_block_with_one_stale_time_is_counted_and_not_fed() -> None:
    clock = [NOW]
    evaluator, _ = engine(clock, deferring=True)
    evaluator.observe(Block.of([("n1.S.a", (NOW, 9.0)), ("n1.S.b", (NOW, 1.0))]), "n1")
    assert evaluator.states("gt")["n1"] == State("firing", NOW, 9.0, None)
    stale = NOW - STALE_AFTER - 1
    evaluator.observe(Block.of([("n1.S.a", (stale, 1.0)), ("n1.S.b", (stale, 1.0)), ("n1.X.y", (stale, 1.0))]), "n1")
    assert evaluator.ignored_stale == 2  # the two datapoints a rule matches; nothing fed, so still firing
    assert evaluator.states("gt")["n1"] == State("firing", NOW, 9.0, None)
    fresh = NOW - STALE_AFTER + 1
    evaluator.observe(Block.of([("n1.S.a", (fresh, 1.0)), ("n1.S.b", (fresh, 1.0))]), "n1")
    assert evaluator.ignored_stale == 2 and evaluator.states("gt")["n1"].status == "resolved"
