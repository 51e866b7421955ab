"""CPU utilisation over the window between a sensor's own two readings.

psutil's non-blocking ``cpu_percent()`` and ``cpu_times_percent()`` keep their
reference reading per calling *thread*. The agent measures each sensor on
whichever worker thread of its pool is free, so psutil would average over
"since this worker last asked" (a random window, 0 on a worker's first call).
Here each sensor keeps its own previous ``psutil.cpu_times(percpu=True)``
reading and rates over exactly the time since its own previous sample, with
psutil's formulas (see :func:`total_time` and :func:`busy_time`).

The reading (:class:`OwnCPUTimes`) is live; the arithmetic works on the plain
form of two readings, so golden tests can feed recorded pairs to it.
"""

from __future__ import annotations

import threading
import time
from functools import cache
from typing import Any

import psutil

GUEST_FIELDS = ("guest", "guest_nice")
"""Linux already counts guest time in ``user`` and ``nice``: not added twice."""
WAITING_FIELDS = ("idle", "iowait")
"""Time a CPU did nothing (iowait: idle while IO is pending, which Linux does not count as idle)."""
SHARED_FOR = 0.002
"""Seconds one per-CPU reading serves every sensor that asks: CPUPercent and
CPUTimesPercent due at the same tick read /proc/stat once (the kernel's
counters move in 10 ms ticks, so a younger reading is the same figures)."""

_shared_lock = threading.Lock()
_shared: tuple[float, list[Any]] = (float("-inf"), [])


def per_cpu_times() -> list[Any]:
    """``psutil.cpu_times(percpu=True)``, shared by the readings within :data:`SHARED_FOR` seconds."""
    global _shared
    with _shared_lock:
        taken, reading = _shared
        now = time.monotonic()
        if now - taken >= SHARED_FOR:
            reading = psutil.cpu_times(percpu=True)
            _shared = (now, reading)
        return reading


class OwnCPUTimes:
    """A sensor's own previous per-CPU times reading.

    :meth:`read` returns ``{"previous": …, "current": …}``: the per-CPU
    reading of the previous sample (None on the first, or when the CPU set
    changed) and this one. The previous reading only moves on when the window
    is usable, so a second call within one clock tick (no CPU time elapsed)
    sends nothing and the next sample covers the longer window. A sensor
    instance is measured by one call at a time, but on any thread; the lock
    keeps even overlapping calls to consecutive windows.
    """

    def __init__(self) -> None:
        self._previous: list[Any] | None = None
        self._lock = threading.Lock()

    def read(self) -> dict:
        with self._lock:
            current = per_cpu_times()
            previous = self._previous
            if previous is not None and len(previous) != len(current):
                previous = None  # a CPU came or went: the positions no longer match
            if previous is None or window_is_usable(previous, current):
                self._previous = current
            return {"previous": previous, "current": current}


def field_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Seconds per mode spent in the window; a counter that went back counts 0 (as psutil and top do)."""
    return {field: max(0.0, after[field] - before[field]) for field in after if field in before}


def total_time(deltas: dict[str, float]) -> float:
    """All time in the window, as psutil counts it: every mode except the guest ones (already in user/nice)."""
    return sum(value for field, value in deltas.items() if field not in GUEST_FIELDS)


def busy_time(deltas: dict[str, float]) -> float:
    """Time the CPU worked: the total less idle and iowait (psutil's and htop's busy time)."""
    return total_time(deltas) - sum(deltas.get(field, 0.0) for field in WAITING_FIELDS)


def percent(part: float, whole: float) -> float:
    """``part`` in percent of ``whole`` (> 0), rounded to 0.1 as psutil does, clamped to 0..100."""
    return min(max(0.0, round(100.0 * part / whole, 1)), 100.0)


def window_is_usable(previous: list, current: list) -> bool:
    """Whether every CPU's clock moved on between the two readings (they have one tick resolution)."""
    global _last_usable
    last = _last_usable
    if last[0] is previous and last[1] is current:  # the other sensor's window, of the same shared readings
        return last[2]
    usable = all(_total(after) > _total(before) for before, after in zip(previous, current, strict=True))
    _last_usable = (previous, current, usable)
    return usable


_last_usable: tuple[object, object, bool] = (None, None, False)
"""The last two readings :func:`window_is_usable` looked at, and its answer: CPUPercent and
CPUTimesPercent measured at one tick rate over the same two shared readings (:func:`per_cpu_times`),
so the second asks about the very same objects (kept alive here, so never another reading's)."""


def _total(times: Any) -> float:
    if isinstance(times, dict):
        return total_time(times)
    return sum([times[index] for index in _counted(times._fields)])  # total_time without a dict


@cache
def _counted(fields: tuple[str, ...]) -> tuple[int, ...]:
    """Positions of the fields :func:`total_time` counts, in order."""
    return tuple(index for index, field in enumerate(fields) if field not in GUEST_FIELDS)


@cache
def _waiting(fields: tuple[str, ...]) -> tuple[int, ...]:
    """Positions of the fields :func:`busy_time` takes off, in :data:`WAITING_FIELDS` order."""
    return tuple(fields.index(field) for field in WAITING_FIELDS if field in fields)


def per_cpu_deltas(raw: dict) -> list[dict[str, float]] | None:
    """Each CPU's seconds per mode between ``raw["previous"]`` and ``raw["current"]`` (plain form);
    None when there is no window to rate over (first reading, changed CPU set, no tick elapsed)."""
    previous, current = raw.get("previous"), raw.get("current")
    if not previous or not current or len(previous) != len(current):
        return None
    deltas = [field_deltas(before, after) for before, after in zip(previous, current, strict=True)]
    if not all(total_time(cpu) > 0 for cpu in deltas):
        return None
    return deltas


def summed(deltas: list[dict[str, float]]) -> dict[str, float]:
    """All CPUs together: per mode, the sum over CPUs (what the kernel's ``cpu`` line counts)."""
    total: dict[str, float] = {}
    for cpu in deltas:
        for field, value in cpu.items():
            total[field] = total.get(field, 0.0) + value
    return total


def busy_percent(deltas: dict[str, float]) -> float:
    """Utilisation in the window: busy time in percent of all time."""
    return percent(busy_time(deltas), total_time(deltas))


def mode_percents(deltas: dict[str, float]) -> dict[str, float]:
    """Each mode's share of the window in percent (psutil's ``cpu_times_percent`` fields).

    psutil divides by at least one second of CPU time, which shrinks every
    field of a shorter window (their sum falls below 100); here the whole is
    the window's own time."""
    whole = total_time(deltas)
    return {field: percent(value, whole) for field, value in deltas.items()}


# -- the same arithmetic on psutil's own tuples ---------------------------------
#
# A live sensor reads psutil's namedtuples (one type, the same fields for every CPU).
# These give exactly the figures of the functions above on their plain form (the same
# operations on the same numbers, in the same order) without a dict per CPU and
# reading: the golden tests check the plain form, tests/test_cpu_windows.py that the two agree.


def of_tuples(raw: dict) -> bool:
    """Whether both readings of ``raw`` are psutil's tuples (not the plain form recorded for a test)."""
    previous, current = raw.get("previous"), raw.get("current")
    return bool(current) and isinstance(current[0], tuple) and (not previous or isinstance(previous[0], tuple))


class TupleWindow:
    """Each CPU's seconds per mode between two readings of psutil's tuples (as
    :func:`per_cpu_deltas`: rows in field order), with each CPU's :func:`total_time`."""

    __slots__ = ("fields", "rows", "totals")

    def __init__(self, fields: tuple[str, ...], rows: list[list[float]], totals: list[float]) -> None:
        self.fields, self.rows, self.totals = fields, rows, totals

    @classmethod
    def of(cls, previous: list | None, current: list | None) -> TupleWindow | None:
        """None when :func:`per_cpu_deltas` would be (no window to rate over). Two sensors
        rating over the same two readings (the shared ones of one tick) share the window
        (it is not changed by its methods)."""
        global _last_window
        last = _last_window
        if last[0] is previous and last[1] is current and previous is not None:
            return last[2]
        window = cls._of(previous, current)
        _last_window = (previous, current, window)
        return window

    @classmethod
    def _of(cls, previous: list | None, current: list | None) -> TupleWindow | None:
        if not previous or not current or len(previous) != len(current):
            return None
        fields = current[0]._fields
        counted = _counted(fields)
        rows = [[max(0.0, after - before) for after, before in zip(now, then)]  # noqa: B905  (one type)
                for then, now in zip(previous, current, strict=True)]  # fmt: skip
        totals = [sum([row[index] for index in counted]) for row in rows]
        if not all(total > 0 for total in totals):
            return None
        return cls(fields, rows, totals)

    def busy_percents(self) -> list[float]:
        """:func:`busy_percent` of each CPU."""
        waiting = _waiting(self.fields)
        return [
            percent(total - sum([row[index] for index in waiting]), total)
            for row, total in zip(self.rows, self.totals)  # noqa: B905  (one per CPU)
        ]

    def summed(self) -> tuple[list[float], float]:
        """:func:`summed` over all CPUs (field order) and its :func:`total_time`."""
        rows = iter(self.rows)
        total = [0.0 + value for value in next(rows)]
        for row in rows:
            total = [sum_so_far + value for sum_so_far, value in zip(total, row)]  # noqa: B905
        return total, sum([total[index] for index in _counted(self.fields)])

    def busy_percent_of(self, row: list[float], total: float) -> float:
        """:func:`busy_percent` of one row whose :func:`total_time` is ``total``."""
        return percent(total - sum([row[index] for index in _waiting(self.fields)]), total)

    def mode_percents_of(self, row: list[float], total: float) -> dict[str, float]:
        """:func:`mode_percents` of one row whose :func:`total_time` is ``total``."""
        return {field: percent(value, total) for field, value in zip(self.fields, row)}  # noqa: B905


_last_window: tuple[object, object, TupleWindow | None] = (None, None, None)
"""The last two readings :meth:`TupleWindow.of` rated over, and its window (see :data:`_last_usable`)."""
