"""Adaptive sampling: a sensor measures faster while a condition holds.

``[sensor:NAME]`` may carry three generic options::

    fast time_interval = 5                  ; seconds between samples while fast
    fast when = CPUPercent.total > 80       ; on the latest value of any sensor's metric
    fast hold = 180                         ; stay fast this long after the condition stops

A condition is ``Sensor.metric.path OP number`` (``OP`` one of ``> >= < <= == !=``),
the path relative to the host exactly as it appears in Graphite; several clauses
may be joined with ``and`` or with ``or`` (not both in one condition, so there is
no precedence to get wrong). ``fast hold`` defaults to three slow intervals: the
condition must stay false for that long before the sensor slows down again, so a
load hovering around the threshold does not flap the schedule.

Everything here is pure (no clock, no I/O: the caller passes the time) so the
agent's scheduling decisions are tested without waiting; :class:`AdaptivePlan`
only logs its switches.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the configuration parses these options with this module: no import at run time
    from .config import SensorConfig
    from .graphite_paths import Datapoint

log = logging.getLogger(__name__)

FAST_INTERVAL = "fast time_interval"
FAST_WHEN = "fast when"
FAST_HOLD = "fast hold"
FAST_KEYS = (FAST_INTERVAL, FAST_WHEN, FAST_HOLD)
DEFAULT_HOLD_SLOW_INTERVALS = 3
"""``fast hold`` default, in slow intervals."""

GENERIC_OPTIONS_HELP = (
    "time_interval: seconds between two samples (the slow interval when adaptive).",
    "fast time_interval: seconds between samples while 'fast when' holds (must be below time_interval).",
    "fast when: condition on the latest value of any sensor's metric, e.g. 'CPUPercent.total > 80';"
    " clauses may be joined with 'and' or with 'or'.",
    f"fast hold: seconds to stay fast after the condition stops holding"
    f" (default {DEFAULT_HOLD_SLOW_INTERVALS} x time_interval), so the schedule does not flap.",
)
"""What the generic per-sensor options mean, for ``lagent sensors`` and conf/lagent.conf."""

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_CLAUSE = re.compile(r"^\s*(?P<path>[^\s<>=!]+)\s*(?P<op>[<>=!]+)\s*(?P<number>\S+)\s*$")
_PATH = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$")


@dataclass(frozen=True)
class Clause:
    """``Sensor.metric.path OP threshold``."""

    metric: str
    op: str
    threshold: float

    @property
    def sensor(self) -> str:
        return self.metric.split(".", 1)[0]

    def holds(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        short = f"{self.threshold:g}"
        return f"{self.metric} {self.op} {short if float(short) == self.threshold else repr(self.threshold)}"


@dataclass(frozen=True)
class Condition:
    clauses: tuple[Clause, ...]
    joiner: str = "and"
    """``and`` or ``or``; irrelevant for a single clause."""

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(clause.metric for clause in self.clauses)

    def evaluate(self, latest: Mapping[str, float]) -> tuple[bool, str]:
        """Whether the condition holds on ``latest`` values, and why (for the log).

        A metric never seen counts as false: no data is no reason to speed up.
        """
        results = []
        for clause in self.clauses:
            value = latest.get(clause.metric)
            ok = value is not None and clause.holds(value)
            results.append((ok, clause, value))
        verdict = all(r[0] for r in results) if self.joiner == "and" else any(r[0] for r in results)
        relevant = [r for r in results if r[0] == verdict] or results
        reason = f" {self.joiner} ".join(
            f"{clause.metric} = {'unknown' if value is None else f'{value:g}'} {clause.op} {clause.threshold:g}"
            if ok
            else f"{clause.metric} = {'unknown' if value is None else f'{value:g}'}"
            f" (not {clause.op} {clause.threshold:g})"
            for ok, clause, value in relevant
        )
        return verdict, reason

    def __str__(self) -> str:
        return f" {self.joiner} ".join(str(clause) for clause in self.clauses)


@dataclass(frozen=True)
class FastSampling:
    """A sensor's fast schedule: ``interval`` while ``when`` holds, plus ``hold`` seconds."""

    interval: float
    when: Condition
    hold: float


def parse_clause(text: str, sensors: Iterable[str]) -> Clause:
    """One ``Sensor.path OP number``; ``ValueError`` with a one-line reason otherwise."""
    match = _CLAUSE.match(text)
    if not match:
        raise ValueError(f"{text.strip()!r} is not 'Sensor.metric OP number' (OP one of {' '.join(OPERATORS)})")
    path, op, number = match["path"], match["op"], match["number"]
    if op not in OPERATORS:
        raise ValueError(f"unknown operator {op!r} (use one of {' '.join(OPERATORS)})")
    if not _PATH.match(path):
        raise ValueError(f"{path!r} is not a metric path like 'CPUPercent.total'")
    try:
        threshold = float(number)
    except ValueError:
        raise ValueError(f"{number!r} is not a number") from None
    if not math.isfinite(threshold):
        raise ValueError(f"{number!r} is not a finite number")
    known = set(sensors)
    sensor = path.split(".", 1)[0]
    if sensor not in known:
        raise ValueError(f"unknown sensor {sensor!r} (known: {', '.join(sorted(known))})")
    return Clause(path, op, threshold)


def parse_condition(text: str, sensors: Iterable[str]) -> Condition:
    """``clause [and|or clause]…``; mixing ``and`` with ``or`` is refused as ambiguous."""
    sensors = list(sensors)
    words = re.split(r"\s+(and|or)\s+", text.strip())
    parts, joiners = words[::2], set(words[1::2])
    if len(joiners) > 1:
        raise ValueError("mixing 'and' with 'or' is ambiguous; use one of them")
    if not text.strip():
        raise ValueError("empty condition")
    return Condition(tuple(parse_clause(part, sensors) for part in parts), joiners.pop() if joiners else "and")


def parse_fast(slow: float, interval: float | None, when: Condition | None, hold: float | None) -> FastSampling | None:
    """Check the three fast options together; ``ValueError`` names the key at fault first."""
    if interval is None and when is None:
        if hold is not None:
            raise ValueError(f"'{FAST_HOLD}' needs '{FAST_INTERVAL}' and '{FAST_WHEN}'")
        return None
    if interval is None:
        raise ValueError(f"'{FAST_WHEN}' needs '{FAST_INTERVAL}'")
    if when is None:
        raise ValueError(f"'{FAST_INTERVAL}' needs '{FAST_WHEN}'")
    if interval >= slow:
        raise ValueError(f"'{FAST_INTERVAL}' ({interval:g} s) must be below time_interval ({slow:g} s)")
    return FastSampling(interval, when, DEFAULT_HOLD_SLOW_INTERVALS * slow if hold is None else hold)


class AdaptiveSchedule:
    """Fast/slow state of one sensor: switches to fast at once, back to slow after ``hold``.

    Deterministic: the caller passes the clock, so tests drive it directly.
    """

    def __init__(self, slow: float, fast: FastSampling) -> None:
        self.slow = slow
        self.fast = fast
        self.is_fast = False
        self.holding = False
        """The latest verdict: while it is true the sensor stays fast however long ago it came."""
        self.last_true: float | None = None

    @property
    def interval(self) -> float:
        return self.fast.interval if self.is_fast else self.slow

    def observe(self, holds: bool, now: float) -> bool:
        """Take one evaluation of the condition; returns whether the interval changed."""
        self.holding = holds
        if holds:
            self.last_true = now
            if not self.is_fast:
                self.is_fast = True
                return True
            return False
        return self.expire(now)

    def expire(self, now: float, silent_after: float | None = None) -> bool:
        """Slow down once the condition has been false for ``hold`` seconds, or
        (``silent_after``) once no verdict came for that long: a condition sensor
        that fell silent must not keep its dependents fast forever."""
        silent = silent_after is not None and self.last_true is not None and now - self.last_true >= silent_after
        if self.holding and not silent:
            return False
        if self.is_fast and (self.last_true is None or now - self.last_true >= self.fast.hold):
            self.is_fast = False
            self.holding = False
            return True
        return False


def next_due(origin: float, interval: float, now: float) -> float:
    """The first grid point ``origin + k·interval`` strictly after ``now``.

    Both intervals share ``origin``, so a sensor stays on its grid across switches
    (with a fast interval dividing the slow one, the slow ticks are fast ticks too).
    """
    k = math.floor((now - origin) / interval) + 1
    due = origin + k * interval
    return due if due > now else due + interval


def sensor_of(metric: str) -> str:
    """``CPUPercent`` of ``CPUPercent.total``."""
    return metric.split(".", 1)[0]


class AdaptivePlan:
    """The agent's adaptive sampling: every adaptive sensor's schedule, and the
    latest value of each metric their conditions read.

    :meth:`observe` takes every new sample's datapoints (already flattened) and
    returns the sensors whose interval changed, so the caller wakes them up
    to take the new interval at once. :meth:`update` on a reload keeps the
    fast/slow state of a sensor whose settings did not change.
    """

    def __init__(self, sensors: Iterable[SensorConfig] = ()) -> None:
        self.schedules: dict[str, AdaptiveSchedule] = {}
        self._sensors: dict[str, SensorConfig] = {}
        self._watched: dict[str, frozenset[str]] = {}
        """measured sensor → the metrics of it that some condition reads"""
        self._latest: dict[str, float] = {}
        self._missing_warned: set[str] = set()
        self.update(sensors)

    def update(self, sensors: Iterable[SensorConfig]) -> None:
        """(Re)build the schedules from the configured sensors."""
        self._sensors = {sensor.name: sensor for sensor in sensors}
        schedules = {}
        for sensor in self._sensors.values():
            if sensor.fast is None:
                continue
            current = self.schedules.get(sensor.name)
            if current is not None and (current.slow, current.fast) == (sensor.interval, sensor.fast):
                schedules[sensor.name] = current
            else:
                schedules[sensor.name] = AdaptiveSchedule(sensor.interval, sensor.fast)
        self.schedules = schedules
        watched: dict[str, set[str]] = {}
        for schedule in schedules.values():
            for metric in schedule.fast.when.metrics:
                watched.setdefault(sensor_of(metric), set()).add(metric)
        self._watched = {name: frozenset(metrics) for name, metrics in watched.items()}
        self._latest = {metric: value for metric, value in self._latest.items() if sensor_of(metric) in self._watched}

    def watches(self, sensor: str) -> bool:
        """Whether some condition reads a metric of ``sensor``."""
        return sensor in self._watched

    def interval(self, sensor: SensorConfig) -> float:
        """The interval ``sensor`` runs at now (its fast one while its condition says so)."""
        schedule = self.schedules.get(sensor.name)
        return schedule.interval if schedule is not None else sensor.interval

    def intervals(self) -> dict[str, float]:
        """The current interval of every configured sensor."""
        return {name: self.interval(sensor) for name, sensor in self._sensors.items()}

    def observe(self, sensor: str, datapoints: Iterable[Datapoint], now: float) -> list[str]:
        """Note the watched metrics among a sample's ``datapoints`` (``HOST.Sensor.metric``
        paths) and re-evaluate the conditions reading them; returns the sensors
        whose interval changed."""
        watched = self._watched.get(sensor)
        if not watched:
            return []
        for path, (_, value) in datapoints:
            metric = path.split(".", 1)[1]
            if metric in watched and isinstance(value, (int, float)):
                self._latest[metric] = float(value)
        for metric in sorted(watched - self._latest.keys() - self._missing_warned):
            self._missing_warned.add(metric)  # once: the sensor's paths rarely change
            log.warning("%s has no metric %s: 'fast when' conditions on it never hold", sensor, metric)
        changed = []
        for name, schedule in self.schedules.items():
            if not (schedule.fast.when.metrics & watched):
                continue
            holds, reason = schedule.fast.when.evaluate(self._latest)
            if schedule.observe(holds, now):
                self._log_switch(name, schedule, reason)
                changed.append(name)
        return changed

    def expire(self, sensor: str, now: float) -> bool:
        """Slow ``sensor`` down if its hold is over or the sensors its condition reads
        fell silent; returns whether its interval changed."""
        schedule = self.schedules.get(sensor)
        if schedule is None or not schedule.expire(now, self.silence_limit(schedule)):
            return False
        self._log_switch(sensor, schedule, "no fresh value")
        return True

    def silence_limit(self, schedule: AdaptiveSchedule) -> float:
        """How long without a verdict before a fast sensor slows down: the hold plus
        three intervals of the slowest sensor its condition reads."""
        read = {sensor_of(metric) for metric in schedule.fast.when.metrics}
        intervals = [self.interval(sensor) for name, sensor in self._sensors.items() if name in read]
        return schedule.fast.hold + 3 * max(intervals, default=schedule.slow)

    @staticmethod
    def _log_switch(name: str, schedule: AdaptiveSchedule, reason: str) -> None:
        if schedule.is_fast:
            log.info("%s: fast sampling (%g s) because %s", name, schedule.interval, reason)
        else:
            log.info("%s: back to %g s after %g s hold (%s)", name, schedule.interval, schedule.fast.hold, reason)
