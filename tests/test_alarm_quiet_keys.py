"""A node key that stays ``ok`` through a block keeps its state and has its shown value written in only when read
(fructosa/alarms/matching.py ``RuleRuntime.stays_quiet``/``settle``): whatever blocks come (keys fed whole or in
part, repeated paths, values that hold or not, NaN, stale times, prunes between reads, pending and firing keys),
what is read — every state, the rule's current value, every transition — must be what an evaluator that builds
every key's state at every block gives."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fructosa.alarms.rules import State
from fructosa.wire.blocks import Block
from tests.support.alarm_reference import NODES, NOW, PROPERTIES, RULES, STALE_AFTER, engine, same

pytestmark = pytest.mark.timeout(120)

SENSORS = ("S.a", "S.b", "S.c", "T.a")
values = st.sampled_from([-1.0, -0.0, 0.0, 1.0, 5.0, 7.5, math.inf, -math.inf, math.nan])
datapoint = st.tuples(st.sampled_from(NODES), st.sampled_from(SENSORS), values, st.integers(0, 7).map(lambda n: n == 0))
step = st.one_of(
    st.tuples(st.just("block"), st.lists(datapoint, min_size=1, max_size=9), st.integers(0, 4000)),
    st.tuples(st.just("read"), st.just(None), st.just(0)),
    st.tuples(st.just("tick"), st.just(None), st.integers(0, 200)),
)


@PROPERTIES
@given(st.lists(step, min_size=1, max_size=30))
def test_deferred_shown_values_read_as_built_ones(steps: list) -> None:
    clock = [NOW]
    deferring, deferring_seen = engine(clock, deferring=True)
    building, building_seen = engine(clock, deferring=False)
    for kind, datapoints, advance in steps:
        if kind == "block":
            clock[0] += advance / 10
            block = Block.of([
                (f"{node}.{sensor}", (clock[0] - (2 * STALE_AFTER if stale else 0.0), value))
                for node, sensor, value, stale in datapoints
            ])  # fmt: skip
            host = datapoints[0][0]
            deferring.observe(block, host)
            building.observe(block, host)
        elif kind == "tick":
            clock[0] += advance
            deferring.tick()
            building.tick()
        else:
            for name, *_ in RULES:
                assert same(deferring.states(name), building.states(name)), name
                assert repr(deferring.current(name)) == repr(building.current(name)), name
        assert [repr(t) for t in deferring_seen] == [repr(t) for t in building_seen]
    for name, *_ in RULES:
        assert same(deferring.states(name), building.states(name)), name
    assert deferring.ignored_stale == building.ignored_stale


def test_a_quiet_key_builds_no_state_and_shows_its_last_value() -> None:
    clock = [NOW]
    evaluator, seen = engine(clock, deferring=True)
    runtime = evaluator.runtimes["gt"]

    def feed(a: float, b: float) -> None:
        clock[0] += 1
        evaluator.observe(Block.of([("n1.S.a", (clock[0], a)), ("n1.S.b", (clock[0], b))]), "n1")

    feed(1.0, 2.0)
    feed(3.0, 4.0)
    assert runtime.shown_later == {"n1"}
    assert runtime.states["n1"] == State("ok", 0.0, 2.0, None)  # as the first block built it (a new key)
    feed(9.0, 4.0)  # read nothing in between: the state built now has the value shown, the largest holding one
    assert [(t.key, t.old, t.new, t.value) for t in seen if t.rule.name == "gt"] == [("n1", "ok", "firing", 9.0)]
    assert evaluator.states("gt")["n1"].value == 9.0 and evaluator.current("gt") == 9.0
    feed(1.0, 2.0)
    feed(3.0, 4.0)
    assert runtime.shown_later == {"n1"}
    assert evaluator.states("gt") == {"n1": State("resolved", NOW + 4, 4.0, None)}  # the last series' value
    assert runtime.shown_later == set()


def test_a_quiet_key_whose_series_go_stale_leaves_with_its_state() -> None:
    clock = [NOW]
    evaluator, seen = engine(clock, deferring=True)
    evaluator.observe(Block.of([("n1.S.a", (NOW, 1.0)), ("n2.S.a", (NOW, 9.0))]), None)  # n2 fires
    evaluator.observe(Block.of([("n1.S.a", (NOW, 2.0))]), "n1")
    assert evaluator.runtimes["gt"].shown_later == {"n1"}
    clock[0] = NOW + STALE_AFTER + 1
    evaluator.tick()
    assert evaluator.states("gt") == {} and evaluator.runtimes["gt"].shown_later == set()
    assert [(t.key, t.old, t.new) for t in seen if t.rule.name == "gt"] == [
        ("n2", "ok", "firing"),
        ("n2", "firing", "resolved"),
    ]
