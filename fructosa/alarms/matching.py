"""Which rules a block's datapoints feed: the alarm evaluator's rule index and its per-layout plans.

An agent sends blocks of the same paths over and over, and most of its paths
feed no rule. So the evaluator matches paths once, not once a block:

* :class:`RuleIndex` indexes the rules' globs by their last component when it
  is a plain name (a path meets only the rules of its own last component and
  those without one), and remembers each path's rules (a bounded cache);
* for each block layout (the hash and length of its path bytes; a bounded
  cache) it works out a :class:`LayoutPlan` once: the block's nodes, and the
  positions that feed a rule, grouped by the rule and key they count under,
  with C-level getters that pick those positions' times and values out of
  the block's arrays. A block no rule cares about then costs one dict lookup,
  and one a rule cares about a handful of C calls per rule and key rather
  than Python work per datapoint.

Both caches are emptied whenever the rules change (:meth:`RuleIndex.reindex`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter

from .rules import CLUSTER_KEY, CLUSTER_TARGETS, OPERATORS, Rule, State, glob_regex, job_of, literal_tail

MAX_CACHED_PATHS = 200_000
MAX_CACHED_LAYOUTS = 20_000
DECIDING = {">": max, ">=": max, "<": min, "<=": min}
"""For an operator that holds for some value of a set exactly when it holds for the set's largest (smallest)
value: that function."""


class RuleRuntime:
    """One rule's series and states, by key (node, job id or ``cluster``).

    ``series[key]`` maps each path feeding the key to ``(arrival time, value)``, in the order the paths first
    came; ``dirty`` holds the keys to evaluate at the next tick (cluster rules).

    ``shown_later`` holds node keys that stayed ``ok`` (or ``resolved``) through their last block: their state
    in ``states`` is the one before that block, unchanged but for its value, which is the value shown when
    nothing holds, their series' last value; :meth:`settle` writes it in before the states are read or the
    series change other than by a block (which evaluates the key again). Most keys of most rules never
    fire, so most blocks then build no state at all.

    ``deferred`` holds, for such a key, the feed of its last quiet block not yet written into its series:
    the block's paths for the key, their values and arrival time (:meth:`feed_quietly`). Writing them costs a dict
    store and a tuple per value; a next quiet block of the same layout writes the same paths, so it simply
    replaces the one deferred. Whatever reads or changes a key's series other than a quiet block takes it
    through :meth:`series_of` or :meth:`settle`, which write the deferred feed in first."""

    __slots__ = (
        "rule", "regex", "series", "states", "dirty", "kind", "extreme", "operator", "shown_later", "deferred"
    )  # fmt: skip

    def __init__(self, rule: Rule, kind: str = "threshold") -> None:
        self.rule = rule
        self.regex = glob_regex(rule.metric) if kind != "silent" else None
        self.series: dict[str, dict[str, tuple[float, float]]] = {}
        self.states: dict[str, State] = {}
        self.dirty: set[str] = set()
        self.kind = kind
        self.operator = OPERATORS[rule.operator]
        self.extreme = DECIDING.get(rule.operator) if kind == "threshold" and rule.target == "node" else None
        """For a node threshold rule with an ordering operator, the function (max or min) whose value alone
        decides whether the rule holds for a set of values; else None."""
        self.shown_later: set[str] = set()
        self.deferred: dict[str, tuple[tuple[str, ...], tuple[float, ...], float]] = {}

    def feed_quietly(self, key: str, paths: tuple[str, ...], values: tuple[float, ...], now: float) -> bool:
        """Take a block's ``values`` of ``paths`` for the node ``key`` without building its state, when it stays
        as it was but for its value: the key joins :attr:`shown_later` and the feed is deferred (see the class
        docstring; one deferred from the same layout's ``paths`` is replaced, another one written in first).
        False, with nothing done, when the key must be fed and evaluated: a value holds, a NaN (no extreme), an
        operator that no extreme decides, a key new, pending or firing.

        The key's other series need no look: a key is ``ok`` or ``resolved`` only after an evaluation found
        no value of its series holding, and every value fed since was judged here or evaluated, while a prune
        only takes values away."""
        extreme = self.extreme
        if extreme is None:
            return False
        total = sum(values)
        if total != total or self.operator(extreme(values), self.rule.value):
            return False
        state = self.states.get(key)
        if state is None or (state.status != "ok" and state.status != "resolved"):
            return False  # (a new key: evaluated, so that it takes its place among the states as it always did)
        self.shown_later.add(key)
        deferred = self.deferred.get(key)
        if deferred is not None and deferred[0] is not paths:
            self._write(key, deferred)
        self.deferred[key] = (paths, values, now)
        return True

    def series_of(self, key: str) -> dict[str, tuple[float, float]] | None:
        """The series of ``key`` with its deferred feed written in (None for a key without series)."""
        deferred = self.deferred.pop(key, None)
        if deferred is not None:
            self._write(key, deferred)
        return self.series.get(key)

    def _write(self, key: str, deferred: tuple[tuple[str, ...], tuple[float, ...], float]) -> None:
        paths, values, now = deferred
        series = self.series[key]
        for path, value in zip(paths, values, strict=True):
            series[path] = (now, value)

    def settle(self) -> None:
        """Write every deferred feed into its series, then the shown value into every state of
        :attr:`shown_later` (what evaluating it gave)."""
        for key, deferred in self.deferred.items():
            self._write(key, deferred)
        self.deferred.clear()
        states, series = self.states, self.series
        for key in self.shown_later:
            states[key] = states[key]._replace(value=next(reversed(series[key].values()))[1])
        self.shown_later.clear()

    def key_of(self, node: str, job: str | None) -> str | None:
        target = self.rule.target
        if target == "node":
            return node
        if target == "job":
            return job
        return CLUSTER_KEY

    def evaluated_at_once(self) -> bool:
        """Whether a key is evaluated at the end of the block that fed it (node and job thresholds), or at the
        next tick (cluster aggregates; the built-in rules' own ticks)."""
        return self.kind == "threshold" and self.rule.target not in CLUSTER_TARGETS

    def firing(self) -> int:
        return sum(1 for state in self.states.values() if state.status == "firing")


Target = tuple[RuleRuntime, str, bool]
"""(rule, the key a datapoint counts under, whether that key is evaluated at the end of the block)."""
Group = tuple[RuleRuntime, str, bool, tuple[str, ...], Callable[[Sequence[float]], tuple[float, ...]]]
"""(rule, key, evaluated at once, the paths feeding it in position order, a getter of their values)."""


def _picker(positions: Sequence[int]) -> Callable[[Sequence[float]], tuple[float, ...]]:
    """A C-level getter of the items at ``positions``, always as a tuple (``itemgetter`` of one is not)."""
    if len(positions) == 1:
        return lambda numbers, position=positions[0]: (numbers[position],)
    return itemgetter(*positions)


class LayoutPlan:
    """What a block of one layout feeds; see the module docstring.

    ``matches`` lists every matching position as ``(position, path, targets)``, for the general case (a block
    with a stale time); ``groups`` are the same datapoints grouped by rule and key, in the order their first
    position comes, and ``times_of`` picks the matching positions' times, for the common case where none is
    stale."""

    __slots__ = ("nodes", "matches", "groups", "times_of")

    def __init__(self, nodes: tuple[str, ...], matches: tuple[tuple[int, str, tuple[Target, ...]], ...]) -> None:
        self.nodes = nodes
        self.matches = matches
        grouped: dict[tuple[RuleRuntime, str], tuple[bool, list[int], list[str]]] = {}
        for position, path, targets in matches:
            for runtime, key, at_once in targets:
                _, positions, paths = grouped.setdefault((runtime, key), (at_once, [], []))
                positions.append(position)
                paths.append(path)
        self.groups: tuple[Group, ...] = tuple(
            (runtime, key, at_once, tuple(paths), _picker(positions))
            for (runtime, key), (at_once, positions, paths) in grouped.items()
        )
        self.times_of = _picker([position for position, _, _ in matches]) if matches else None


class RuleIndex:
    """The rules' globs indexed for matching, each path's rules, and each layout's :class:`LayoutPlan`."""

    def __init__(self, runtimes: Iterable[RuleRuntime] = ()) -> None:
        self.reindex(runtimes)

    def reindex(self, runtimes: Iterable[RuleRuntime]) -> None:
        """Index these rules by the last component of their glob; forget every cached match."""
        self._by_tail: dict[str, list[RuleRuntime]] = {}
        self._any_tail: list[RuleRuntime] = []
        for runtime in runtimes:
            if runtime.regex is None:
                continue
            tail = literal_tail(runtime.rule.metric)
            if tail is None:
                self._any_tail.append(runtime)
            else:
                self._by_tail.setdefault(tail, []).append(runtime)
        self._path_rules: dict[str, tuple[RuleRuntime, ...]] = {}
        self._plans: dict[tuple[int, int], LayoutPlan] = {}

    def rules_for(self, path: str) -> tuple[RuleRuntime, ...]:
        """The rules whose glob (and job, for a rule of one job) ``path`` matches."""
        cached = self._path_rules.get(path)
        if cached is not None:
            return cached
        candidates = [*self._by_tail.get(path.rsplit(".", 1)[-1], ()), *self._any_tail]
        found = tuple(
            runtime for runtime in candidates
            if runtime.regex.fullmatch(path) and (runtime.rule.job is None or job_of(path) == runtime.rule.job)
        )  # fmt: skip
        if len(self._path_rules) >= MAX_CACHED_PATHS:
            self._path_rules.clear()
        self._path_rules[path] = found
        return found

    def plan(self, paths: bytes) -> LayoutPlan:
        """The plan of a block with these path bytes: each matching position with the rules it feeds and the key
        it counts under (worked out once a layout)."""
        key = (hash(paths), len(paths))
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        nodes: dict[str, None] = {}
        matches = []
        for position, path in enumerate(paths.decode("ascii", "replace").split("\n")):
            node = path.partition(".")[0]
            nodes[node] = None
            runtimes = self.rules_for(path)
            job = job_of(path) if runtimes else None
            keyed = ((runtime, runtime.key_of(node, job)) for runtime in runtimes)
            targets = tuple(
                (runtime, series_key, runtime.evaluated_at_once()) for runtime, series_key in keyed
                if series_key is not None
            )  # fmt: skip
            if targets:
                matches.append((position, path, targets))
        plan = LayoutPlan(tuple(nodes), tuple(matches))
        if len(self._plans) >= MAX_CACHED_LAYOUTS:
            self._plans.clear()
        self._plans[key] = plan
        return plan
