"""An alarm evaluator and its reference twin for the property tests of the evaluator's shortcuts.

The twin has every rule's ``extreme`` taken away, so it evaluates every key and builds its state at every
block: what the shortcuts (quiet keys left as they are, deferred feeds) must read the same as."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from fructosa.alarms.evaluator import AlarmEvaluator, EvaluatorSettings, Transition
from fructosa.alarms.rules import State, make_rule

PROPERTIES = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_800_000_000.0
STALE_AFTER = 300.0
NODES = ("n1", "n2")
RULES = (
    ("gt", "*.S.*", ">", 5.0, 0.0),
    ("lt-for", "*.S.*", "<", 0.0, 2.0),  # pending before firing
    ("ge", "*.*.a", ">=", 5.0, 0.0),
    ("eq", "*.S.a", "==", 5.0, 0.0),  # not decided by an extreme: always built
)


def engine(clock: list[float], deferring: bool) -> tuple[AlarmEvaluator, list[Transition]]:
    """The evaluator of :data:`RULES` on ``clock[0]`` (``deferring``: as lmaster runs it; else the
    reference twin) and the list its transitions go to."""
    evaluator = AlarmEvaluator(
        [make_rule(name, metric, operator, value, for_seconds) for name, metric, operator, value, for_seconds in RULES],
        EvaluatorSettings(node_silent=False, job_idle=False, stale_after=STALE_AFTER),
        lambda: clock[0],
    )
    if not deferring:
        for runtime in evaluator.runtimes.values():
            runtime.extreme = None  # every key evaluated, fed at once and its state built at every block
    seen: list[Transition] = []
    evaluator.listeners.append(seen.append)
    return evaluator, seen


def same(left: dict[str, State], right: dict[str, State]) -> bool:
    """Equal states in the same order, NaN equal to NaN and -0.0 told from 0.0."""
    return list(left) == list(right) and all(repr(left[key]) == repr(right[key]) for key in left)
