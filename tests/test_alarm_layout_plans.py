"""The alarm evaluator feeds a block rule and key at a time, and judges a node rule from its series' largest or
smallest value (fructosa/alarms/matching.py, evaluator.py): whatever blocks come (stale times, several nodes in
one block, NaN and infinite values from lmaster's own datapoints, every operator, a rule's key limit), every
state and counter must be what feeding datapoint by datapoint and scanning every series gives."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fructosa.alarms.evaluator import AlarmEvaluator, EvaluatorSettings
from fructosa.alarms.rules import OPERATORS, State, make_rule, step
from fructosa.wire.blocks import Block

pytestmark = pytest.mark.timeout(120)

PROPERTIES = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_800_000_000.0
STALE_AFTER = 300.0
NODES = ("n1", "n2", "n3")
SENSORS = ("S.a", "S.b", "T.a", "T.c")
RULES = (
    ("gt", "*.S.*", ">", 5.0),
    ("ge", "*.*.a", ">=", 5.0),
    ("lt", "*.S.b", "<", 0.0),
    ("le", "*.T.*", "<=", 0.0),
    ("eq", "*.S.a", "==", 5.0),
    ("ne", "*.T.c", "!=", 5.0),
)
values = st.sampled_from([-1.0, -0.0, 0.0, 5.0, 7.5, 1e300, math.inf, -math.inf, math.nan])
points = st.tuples(st.sampled_from(NODES), st.sampled_from(SENSORS), values, st.booleans())
blocks = st.lists(
    st.tuples(st.lists(points, min_size=1, max_size=8, unique_by=lambda p: (p[0], p[1])), st.sampled_from(NODES),
              st.booleans(), st.integers(0, 3)),
    min_size=1, max_size=20,
)  # fmt: skip


def matches(metric: str, path: str) -> bool:
    """The globs above: ``*`` is any one component."""
    globs, components = metric.split("."), path.split(".")
    return len(globs) == len(components) and all(g in ("*", c) for g, c in zip(globs, components, strict=True))


def same(state: State | None, expected: State | None) -> bool:
    """Equal, NaN equal to NaN and -0.0 told from 0.0."""
    if state is None or expected is None:
        return state is expected
    return (
        state.status == expected.status and state.since == expected.since and repr(state.value) == repr(expected.value)
    )


@PROPERTIES
@given(blocks, st.integers(1, 3))
def test_states_are_those_of_feeding_datapoint_by_datapoint(sequence: list, max_keys: int) -> None:
    now = [NOW]
    engine = AlarmEvaluator(
        [make_rule(name, metric, operator, value) for name, metric, operator, value in RULES],
        EvaluatorSettings(node_silent=False, job_idle=False, stale_after=STALE_AFTER, max_keys_per_rule=max_keys),
        lambda: now[0],
    )
    series: dict[str, dict[str, dict[str, float]]] = {name: {} for name, *_ in RULES}
    expected: dict[str, dict[str, State]] = {name: {} for name, *_ in RULES}
    expected_stale = expected_dropped = 0
    for number, (chosen, sender, own, stale_count) in enumerate(sequence):
        now[0] = NOW + number
        one_node = [(sender, sensor, value, stale) for _, sensor, value, stale in chosen]
        datapoints = chosen if own else list({(p[0], p[1]): p for p in one_node}.values())
        stale_positions = {index for index, point in enumerate(datapoints) if point[3] and index < stale_count}
        block = Block.of([
            (f"{node}.{sensor}", (now[0] - (2 * STALE_AFTER if index in stale_positions else 1.0), value))
            for index, (node, sensor, value, _) in enumerate(datapoints)
        ])  # fmt: skip
        engine.observe(block, None if own else sender)
        fed: dict[str, dict[str, None]] = {name: {} for name, *_ in RULES}
        for index, (node, sensor, value, _) in enumerate(datapoints):
            if index in stale_positions:
                expected_stale += 1
                continue
            for name, metric, _, _ in RULES:
                if matches(metric, f"{node}.{sensor}"):
                    keys = series[name]
                    if node not in keys and len(keys) >= max_keys:
                        expected_dropped += 1
                        continue
                    keys.setdefault(node, {})[f"{node}.{sensor}"] = value
                    fed[name][node] = None
        for name, _, operator_name, threshold in RULES:
            for node in fed[name]:
                node_values = list(series[name][node].values())
                holding = [v for v in node_values if OPERATORS[operator_name](v, threshold)]
                if holding:
                    value = max(holding) if operator_name in (">", ">=") else min(holding)
                else:
                    value = node_values[-1]
                old = expected[name].get(node, State())
                expected[name][node] = step(0.0, old, bool(holding), value, now[0])
        for name, *_ in RULES:
            states = engine.states(name)
            assert set(states) == set(expected[name])
            for node, state in states.items():
                assert same(state, expected[name][node]), (name, node, state, expected[name][node])
    assert engine.ignored_stale == expected_stale
    assert engine.dropped_keys == expected_dropped
