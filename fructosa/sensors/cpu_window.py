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

import time
from functools import cache
from itertools import repeat
from operator import add, gt, sub
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

_shared: tuple[float, list[Any], list[float]] = (float("-inf"), [], [])
"""When the shared reading was taken, the reading, and each CPU's :func:`total_time` in it."""


def _shared_reading() -> tuple[list[Any], list[float]]:
    """The shared per-CPU reading and each CPU's total time in it: summed once per reading, where it
    serves as the current reading of this tick's windows and as the previous one of the next tick's.

    No lock (a lock's first use in a second costs as much as the rest of this): the reading, its
    time and its totals are swapped in together by one assignment, so sensors reading at once on
    two threads at worst both read /proc/stat, each with a reading and totals that belong together."""
    global _shared
    taken, reading, totals = _shared
    now = time.monotonic()
    if now - taken >= SHARED_FOR:
        reading = psutil.cpu_times(percpu=True)
        counted = _counted(reading[0]._fields) if reading else ()
        totals = []
        for times in reading:  # a loop, not a comprehension: one code object less to fetch each tick
            totals.append(sum(map(times.__getitem__, counted)))
        _shared = (now, reading, totals)
    return reading, totals


class OwnCPUTimes:
    """A sensor's own previous per-CPU times reading.

    :meth:`read` returns ``{"previous": …, "current": …}``: the per-CPU
    reading of the previous sample (None on the first, or when the CPU set
    changed) and this one. The previous reading only moves on when the window
    is usable, so a second call within one clock tick (no CPU time elapsed)
    sends nothing and the next sample covers the longer window. :meth:`window`
    is the same step with the window between the two readings worked out
    (shared by the sensors rating over the same two readings).

    A sensor instance is measured by one call at a time (the agent never starts
    a sensor that is still measuring), on the event loop or on any thread: the
    previous reading and its totals are kept as one tuple, read and replaced in
    one step each, so no lock is needed.
    """

    def __init__(self) -> None:
        self._previous: tuple[list[Any], list[float]] | None = None
        """The reading the next window starts from and each CPU's total time in it."""

    def read(self) -> dict:
        previous, current = self._step()
        return {"previous": previous, "current": current}

    def window(self) -> TupleWindow | None:
        """The window from the previous reading to a new one (None: no window to rate over)."""
        previous, current = self._step()
        return TupleWindow.of(previous, current)

    def _step(self) -> tuple[list[Any] | None, list[Any]]:
        now = _shared_reading()
        current, totals = now
        kept = self._previous
        if kept is None or len(kept[0]) != len(current):  # none yet, or a CPU came or went
            self._previous = now
            return None, current
        # window_is_usable, on the totals each reading was summed to once
        if all(map(gt, totals, kept[1])):
            self._previous = now
        return kept[0], current


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
    return all(_total(after) > _total(before) for before, after in zip(previous, current, strict=True))


def _total(times: Any) -> float:
    if isinstance(times, dict):
        return total_time(times)
    return sum(map(times.__getitem__, _counted(times._fields)))  # total_time without a dict


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
    :func:`per_cpu_deltas`: rows in field order), with each CPU's :func:`total_time`.

    The agent rates over it once a second, when nothing of this code is in the CPU's
    caches: each figure is worked out in one function with plain loops (every helper
    function, comprehension or generator is one more code object to fetch), with the
    same operations on the same numbers in the same order as the functions above."""

    __slots__ = ("kind", "rows", "totals", "counted", "waiting")

    def __init__(self, kind: type, rows: list[list[float]], totals: list[float]) -> None:
        self.kind, self.rows, self.totals = kind, rows, totals
        """psutil's per-CPU tuple type (its fields are the modes), each CPU's deltas, their total times."""
        self.counted = _counted(kind._fields)  # type: ignore[attr-defined]
        self.waiting = _waiting(kind._fields)  # type: ignore[attr-defined]

    @property
    def fields(self) -> tuple[str, ...]:
        return self.kind._fields  # type: ignore[attr-defined]

    @classmethod
    def of(cls, previous: list | None, current: list | None) -> TupleWindow | None:
        """None when :func:`per_cpu_deltas` would be (no window to rate over). Two sensors
        rating over the same two readings (the shared ones of one tick) share the window
        (it is not changed by its methods)."""
        global _last_window
        last = _last_window
        if last[0] is previous and last[1] is current and previous is not None:
            return last[2]
        window = None
        if previous and current and len(previous) == len(current):
            counted = _counted(current[0]._fields)
            rows, totals = [], []
            for then, now in zip(previous, current):  # noqa: B905  (lengths checked)
                row = list(map(max, _ZEROS, map(sub, now, then)))  # max(0.0, after - before) per mode
                total = sum(map(row.__getitem__, counted))
                if not total > 0:
                    break
                rows.append(row)
                totals.append(total)
            else:
                window = cls(type(current[0]), rows, totals)
        _last_window = (previous, current, window)
        return window

    def busy_percents(self) -> list[float]:
        """:func:`busy_percent` of each CPU."""
        waiting, percents = self.waiting, []
        for row, total in zip(self.rows, self.totals):  # noqa: B905  (one per CPU)
            busy = total - sum(map(row.__getitem__, waiting))
            percents.append(min(max(0.0, round(100.0 * busy / total, 1)), 100.0))  # percent(busy, total)
        return percents

    def summed(self) -> tuple[list[float], float]:
        """:func:`summed` over all CPUs (field order) and its :func:`total_time`."""
        rows = self.rows
        total = list(map(add, _ZEROS, rows[0]))  # 0.0 + value
        for row in rows[1:]:
            total = list(map(add, total, row))
        return total, sum(map(total.__getitem__, self.counted))

    def busy_percent_of(self, row: list[float], total: float) -> float:
        """:func:`busy_percent` of one row whose :func:`total_time` is ``total``."""
        return percent(total - sum(map(row.__getitem__, self.waiting)), total)

    def mode_percents_of(self, row: list[float], total: float) -> dict[str, float]:
        """:func:`mode_percents` of one row whose :func:`total_time` is ``total``."""
        return dict(zip(self.fields, self.percents_of(row, total)))  # noqa: B905

    def percents_of(self, row: list[float], total: float) -> list[float]:
        """:func:`mode_percents`' figures of one row whose :func:`total_time` is ``total``, in field order."""
        percents = []
        for value in row:
            percents.append(min(max(0.0, round(100.0 * value / total, 1)), 100.0))  # percent(value, total)
        return percents

    def total_modes(self) -> tuple:
        """:meth:`percents_of` all CPUs together as psutil's tuple of the modes (``cpu_times_percent()``'s
        type), whose plain form is CPUTimesPercent's sample: no dict for the agent to take apart again."""
        return tuple.__new__(self.kind, self.percents_of(*self.summed()))  # type: ignore[call-overload]


_ZEROS = repeat(0.0)
"""The left operand of ``max(0.0, …)`` and ``0.0 + …`` per mode (map stops at the shorter)."""

_last_window: tuple[object, object, TupleWindow | None] = (None, None, None)
"""The last two readings :meth:`TupleWindow.of` rated over, and its window: CPUPercent and
CPUTimesPercent measured at one tick rate over the same two shared readings (:func:`_shared_reading`),
so the second asks about the very same objects (kept alive here, so never another reading's)."""
