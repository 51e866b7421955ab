"""The alarm evaluator: a tap that checks rules on datapoints as they arrive.

Cost on lmaster's hot path: which rules a block feeds is worked out once per
block layout (:mod:`.matching`). A block no rule cares about costs one dict
lookup; one whose matching datapoints are all fresh (its one time, when it
has one throughout as lagent's blocks do, else one ``min`` of their times,
picked out of the block in C) costs, per rule and key it feeds, one pick of
its values and a dict store per value, then the evaluation of each node or
job key it fed. A node rule with an ordering operator finds whether any of
the node's series holds from their largest (or smallest) value; a node key
that stays ``ok`` through the block keeps its state, and its values wait
(one store for the block) until something reads its series.

What is evaluated when:

* ``node`` and ``job`` rules: at the end of the block that brought a value;
* cluster rules (mean, max, sum over thousands of series): once a
  :meth:`AlarmEvaluator.tick`, so a round of 5,000 agents costs 5,000
  small updates, not 5,000 aggregations;
* ``for`` timers, ``node-silent`` (a known node sent nothing for ``silent
  after`` seconds) and ``job-idle`` (a job's CPU use below a fraction of its
  allocated CPUs): at every tick, with the clock the evaluator was given.

Values older than ``stale_after`` are ignored (a spool replayed after an
outage must not raise old alarms), and series not updated for that long are
forgotten: a key left without series is resolved (a finished job).
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from operator import itemgetter

from ..taps import Tap, common_time
from ..wire.blocks import Block
from .matching import DECIDING, LayoutPlan, RuleIndex, RuleRuntime
from .rules import JOB_IDLE, NODE_SILENT, OPERATORS, Rule, State, aggregate, step

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 60.0
"""Seconds between two sweeps for stale series (about 0.1 s for 5,000 nodes × 65 matching series)."""
_OK = State()


@dataclass(frozen=True)
class EvaluatorSettings:
    node_silent: bool = True
    silent_after: float | None = None
    """Seconds of silence before ``node-silent`` fires; None: three of the node's heartbeat intervals."""
    job_idle: bool = True
    job_idle_fraction: float = 0.25
    job_idle_for: float = 600.0
    stale_after: float = 300.0
    max_keys_per_rule: int = 100_000
    max_nodes: int = 20_000
    tick_interval: float = 1.0
    levels_interval: float = 10.0
    """Seconds between two rounds of every rule's firing level (changes are published at once)."""


_INTERNAL_SETTINGS = ("stale_after", "max_keys_per_rule", "max_nodes", "tick_interval", "levels_interval")
"""Settings no configuration key sets: a reload keeps them."""


@dataclass(frozen=True)
class Transition:
    """A state change of one key of one rule, as the notifier and the live stream see it."""

    rule: Rule
    key: str
    old: str
    new: str
    value: float | None
    since: float
    firing: int
    """How many keys of the rule fire after this change."""


_VALUE = itemgetter(1)


def _builtin_rules(settings: EvaluatorSettings) -> list[tuple[Rule, str]]:
    rules = []
    if settings.node_silent:
        silent = settings.silent_after or 0.0
        rules.append((Rule(NODE_SILENT, "*", ">", silent, 0.0, "node", "critical", origin="builtin"), "silent"))
    if settings.job_idle:
        rule = Rule(JOB_IDLE, "*.SlurmJobs.job_*.cpu_percent", "<", settings.job_idle_fraction,
                    settings.job_idle_for, "job", "warning", origin="builtin")  # fmt: skip
        rules.append((rule, "idle"))
    return rules


class AlarmEvaluator(Tap):
    """See the module docstring. Which rules a block feeds is the :class:`~.matching.RuleIndex`'s; the
    evaluator keeps the series and states and decides. Not thread-safe: lmaster calls it from its event loop
    only."""

    name = "alarms"

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        settings: EvaluatorSettings | None = None,
        clock: Callable[[], float] = time.time,
        heartbeat_of: Callable[[str], float] | None = None,
        job_cpus: Callable[[], Mapping[str, int | None]] | None = None,
    ) -> None:
        self.settings = settings or EvaluatorSettings()
        self.clock = clock
        self.heartbeat_of = heartbeat_of or (lambda node: 30.0)
        self.job_cpus = job_cpus or (lambda: {})
        self.listeners: list[Callable[[Transition], None]] = []
        self.level_listeners: list[Callable[[float, dict[str, int]], None]] = []
        self.runtimes: dict[str, RuleRuntime] = {}
        for rule, kind in _builtin_rules(self.settings):
            self.runtimes[rule.name] = RuleRuntime(rule, kind)
        for rule in rules:
            self.runtimes[rule.name] = RuleRuntime(rule)
        self.last_seen: dict[str, float] = {}
        self.dropped_keys = 0
        self.ignored_stale = 0
        self._last_prune = 0.0
        self._last_levels = 0.0
        self._index = RuleIndex(self.runtimes.values())

    # -- rules ---------------------------------------------------------------------------------------

    def add_rule(self, rule: Rule) -> None:
        if rule.name in self.runtimes:
            raise KeyError(rule.name)
        self.runtimes[rule.name] = RuleRuntime(rule)
        self._index.reindex(self.runtimes.values())

    def remove_rule(self, name: str) -> Rule:
        runtime = self.runtimes.pop(name)
        self._index.reindex(self.runtimes.values())
        self._publish_levels(self.clock(), {runtime.rule.slug: 0})
        return runtime.rule

    def rules(self) -> list[Rule]:
        return [runtime.rule for runtime in self.runtimes.values()]

    def replace_configured(self, settings: EvaluatorSettings, rules: Iterable[Rule]) -> list[str]:
        """A reload: the built-in and configured rules become these; run-time ones stay.

        A rule unchanged keeps its states (a firing alarm does not fire again);
        a changed one starts afresh. Returns the names of run-time rules now
        shadowed by a configured one of the same name (dropped).
        """
        self.settings = replace(settings, **{field: getattr(self.settings, field) for field in _INTERNAL_SETTINGS})
        wanted = [*_builtin_rules(self.settings), *((rule, "threshold") for rule in rules)]
        runtimes: dict[str, RuleRuntime] = {}
        for rule, kind in wanted:
            existing = self.runtimes.get(rule.name)
            same = existing is not None and existing.rule == rule and existing.kind == kind
            runtimes[rule.name] = existing if same else RuleRuntime(rule, kind)
        shadowed = []
        for name, runtime in self.runtimes.items():
            if runtime.rule.origin == "api":
                if name in runtimes:
                    shadowed.append(name)
                else:
                    runtimes[name] = runtime
        gone = {runtime.rule.slug for name, runtime in self.runtimes.items() if runtimes.get(name) is not runtime}
        self.runtimes = runtimes
        self._index.reindex(self.runtimes.values())
        if gone:
            self._publish_levels(self.clock(), dict.fromkeys(gone, 0))
        return shadowed

    # -- feeding -------------------------------------------------------------------------------------

    def observe(self, block: Block, host: str | None) -> None:
        count = len(block.times)
        if not count or len(block.values) != count:
            return
        plan = self._index.plan(block.paths)
        now = self.clock()
        if host is not None:  # lmaster's own datapoints (liveness) do not show that a node is alive
            for node in plan.nodes:
                self._seen(node, now)
        if plan.times_of is None:
            return
        horizon = now - self.settings.stale_after
        same_time = common_time(block.times)  # one time throughout, as lagent's blocks have: no need to pick
        if (min(plan.times_of(block.times)) if same_time is None else same_time) >= horizon:
            dirty = self._feed_fresh(plan, block.values, now)
        else:
            dirty = self._feed(plan, block.times, block.values, now, horizon)
        for runtime, key in dirty:
            self._evaluate(runtime, key, now)

    def _feed_fresh(self, plan: LayoutPlan, values: array, now: float) -> list[tuple[RuleRuntime, str]]:
        """Put a block's matching values, none of them stale, into their keys' series, rule and key at a time;
        the keys to evaluate now, in the order their first datapoint came (as :meth:`_feed` gives them)."""
        dirty = []
        for runtime, key, at_once, paths, values_of in plan.groups:
            picked = values_of(values)
            if key in runtime.series:
                if at_once and runtime.feed_quietly(key, paths, picked, now):
                    continue  # written into the series when something reads them
                series = runtime.series_of(key)
            elif len(runtime.series) >= self.settings.max_keys_per_rule:
                self.dropped_keys += len(paths)
                continue
            else:
                series = runtime.series[key] = {}
            for path, value in zip(paths, picked, strict=True):
                series[path] = (now, value)
            if not at_once:
                runtime.dirty.add(key)
            else:
                dirty.append((runtime, key))
        return dirty

    def _feed(
        self, plan: LayoutPlan, times: array, values: array, now: float, horizon: float
    ) -> dict[tuple[RuleRuntime, str], None]:
        """:meth:`_feed_fresh` datapoint by datapoint, skipping (and counting) those older than ``horizon``."""
        dirty: dict[tuple[RuleRuntime, str], None] = {}
        for position, path, targets in plan.matches:
            when = times[position]
            if when < horizon:
                self.ignored_stale += 1
                continue
            point = (now, values[position])
            for runtime, key, at_once in targets:
                series = runtime.series_of(key)
                if series is None:
                    if len(runtime.series) >= self.settings.max_keys_per_rule:
                        self.dropped_keys += 1
                        continue
                    series = runtime.series[key] = {}
                series[path] = point
                if at_once:
                    dirty[runtime, key] = None
                else:
                    runtime.dirty.add(key)
        return dirty

    def _seen(self, node: str, now: float) -> None:
        if node not in self.last_seen and len(self.last_seen) >= self.settings.max_nodes:
            return
        self.last_seen[node] = now
        silent = self.runtimes.get(NODE_SILENT)
        if silent is not None and silent.states.get(node, _OK).status in ("firing", "pending"):
            self._set(silent, node, False, 0.0, now)

    def forget(self, node: str) -> None:
        """A node removed from the cluster: no more silence alarms about it."""
        self.last_seen.pop(node, None)
        silent = self.runtimes.get(NODE_SILENT)
        if silent is not None:
            silent.states.pop(node, None)

    # -- evaluation ----------------------------------------------------------------------------------

    def _evaluate(self, runtime: RuleRuntime, key: str, now: float) -> None:
        rule = runtime.rule
        series = runtime.series_of(key)
        if not series:
            return
        if rule.target == "node":
            holds, value = _node_holds(rule, series)
            self._set(runtime, key, holds, value, now)
        else:
            value = aggregate(rule.target, (value for _, value in series.values()))
            self._set(runtime, key, value is not None and rule.holds(value), value, now)

    def _set(self, runtime: RuleRuntime, key: str, holds: bool, value: float | None, now: float) -> None:
        runtime.shown_later.discard(key)  # the state built here has its value
        old = runtime.states.get(key, _OK)
        new = step(runtime.rule.for_seconds, old, holds, value, now)
        runtime.states[key] = new
        if new.status != old.status:
            self._transition(runtime, key, old.status, new, now)

    def _transition(self, runtime: RuleRuntime, key: str, old: str, new: State, now: float) -> None:
        firing = runtime.firing()
        transition = Transition(runtime.rule, key, old, new.status, new.value, new.since, firing)
        for listener in self.listeners:
            try:
                listener(transition)
            except Exception:  # a listener's bug must not stop the evaluation
                log.exception("alarm listener failed on %s %s", runtime.rule.name, key)
        if "firing" in (old, new.status):
            self._publish_levels(now, {runtime.rule.slug: firing})

    def _publish_levels(self, now: float, levels: dict[str, int]) -> None:
        for listener in self.level_listeners:
            try:
                listener(now, levels)
            except Exception:
                log.exception("alarm level listener failed")

    def tick(self, now: float | None = None) -> None:
        """Timers, cluster aggregates, silent nodes, idle jobs; then every rule's firing level."""
        now = self.clock() if now is None else now
        for runtime in list(self.runtimes.values()):
            if runtime.kind == "silent":
                self._tick_silent(runtime, now)
            elif runtime.kind == "idle":
                self._tick_idle(runtime, now)
            else:
                pending = [key for key, state in runtime.states.items() if state.status == "pending"]
                for key in dict.fromkeys([*runtime.dirty, *pending]):
                    self._evaluate(runtime, key, now)
                runtime.dirty.clear()
        if now - self._last_prune >= min(PRUNE_INTERVAL, self.settings.stale_after):
            self._prune(now)
            self._last_prune = now
        if now - self._last_levels >= self.settings.levels_interval:
            self._last_levels = now
            self._publish_levels(now, {runtime.rule.slug: runtime.firing() for runtime in self.runtimes.values()})

    def _silent_after(self, node: str) -> float:
        return self.settings.silent_after or 3 * self.heartbeat_of(node)

    def _tick_silent(self, runtime: RuleRuntime, now: float) -> None:
        states = runtime.states
        for node, last in list(self.last_seen.items()):
            silence = now - last
            silent = silence > self._silent_after(node)
            if silent or states.get(node, _OK).status != "ok":
                self._set(runtime, node, silent, silence, now)

    def _tick_idle(self, runtime: RuleRuntime, now: float) -> None:
        allocated = self.job_cpus()
        runtime.dirty.clear()
        for job, series in list(runtime.series.items()):
            cpus = allocated.get(job)
            if not cpus or not series:
                continue
            used = sum(value for _, value in series.values()) / 100.0
            self._set(runtime, job, used < self.settings.job_idle_fraction * cpus, used, now)

    def _prune(self, now: float) -> None:
        horizon = now - self.settings.stale_after
        for runtime in list(self.runtimes.values()):
            runtime.settle()  # the values shown are those of the series as they were evaluated
            for key in list(runtime.series):
                series = runtime.series[key]
                for path in [path for path, (when, _) in series.items() if when < horizon]:
                    del series[path]
                if not series:
                    del runtime.series[key]
                    runtime.dirty.discard(key)
                    state = runtime.states.pop(key, None)
                    if state is not None and state.status == "firing":
                        self._transition(runtime, key, "firing", State("resolved", now, None), now)

    # -- reading -------------------------------------------------------------------------------------

    def states(self, name: str) -> dict[str, State]:
        runtime = self.runtimes[name]
        runtime.settle()
        return dict(runtime.states)

    def current(self, name: str) -> float | None:
        """The value to show for a rule: a firing key's, else the most recent one compared."""
        states = list(self.states(name).values())
        firing = [state for state in states if state.status == "firing"]
        chosen = firing or states
        return chosen[-1].value if chosen else None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_interval)
            try:
                self.tick()
            except Exception:  # the next tick may well work; lmaster must keep relaying
                log.exception("alarm tick failed")


def _node_holds(rule: Rule, series: dict[str, tuple[float, float]]) -> tuple[bool, float]:
    """Whether the node rule holds for any of a node's series, and the value to show: the largest holding value
    for ``>``/``>=``, the smallest for the others, the last series' value when none holds.

    For an ordering operator the largest (smallest) value decides alone, found in C; a NaN (which no operator
    holds for, but which would upset max and min) sends it to the loop over every value.
    """
    operator_name, threshold = rule.operator, rule.value
    operator = OPERATORS[operator_name]
    values = list(map(_VALUE, series.values()))
    deciding = DECIDING.get(operator_name)
    if deciding is not None:
        total = sum(values)
        if total == total:  # no NaN among them
            extreme = deciding(values)
            return (True, extreme) if operator(extreme, threshold) else (False, values[-1])
    holding = [value for value in values if operator(value, threshold)]
    if holding:
        return True, max(holding) if operator_name in (">", ">=") else min(holding)
    return False, values[-1]  # the last series' value, as shown when nothing holds
