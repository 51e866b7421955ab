"""CPU sensors: utilisation, times, counts, kernel statistics, frequency."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import psutil

from .base import NO_SAMPLE, Option, Sensor, SensorUnsupported, as_plain, register
from .cpu_window import OwnCPUTimes, TupleWindow, busy_percent, mode_percents, of_tuples, per_cpu_deltas, summed

PERCPU_TIMES = Option("percpu", bool, False, "also send one series per CPU below cpuN (N from 0)")


def _with_per_cpu(total: dict, per_cpu: list | None) -> dict:
    """Total fields flat (0.3.2 paths) plus ``cpuN`` dicts when asked for."""
    shaped = dict(total)
    for index, fields in enumerate(per_cpu or ()):
        shaped[f"cpu{index}"] = fields
    return shaped


class _OwnWindowSensor(Sensor):
    """A rate over this sensor's own two readings of the per-CPU times (CPUPercent,
    CPUTimesPercent): one reading per sample, never blocking. ``measure`` works on
    psutil's tuples (:meth:`shape_window`); ``shape`` on plain readings (recorded ones,
    the golden tests) gives the same figures."""

    blocking = False  # reads /proc or /sys only

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        self._times = OwnCPUTimes()

    def read(self) -> Any:
        # One per-CPU reading serves every series: a total is their sum, over the same window.
        return self._times.read()

    def measure(self) -> dict | None:
        raw = self.read()
        return self.shape_tuples(raw) if of_tuples(raw) else self.shape(as_plain(raw))

    def measure_compact(self) -> Any:
        window = self._times.window()
        return NO_SAMPLE if window is None else self.shape_window(window)

    def shape_tuples(self, raw: dict) -> dict | None:
        """``shape(as_plain(raw))`` worked out on psutil's tuples: the same figures, no dict per CPU."""
        window = TupleWindow.of(raw["previous"], raw["current"])
        return NO_SAMPLE if window is None else self.shape_window(window)

    def shape_window(self, window: TupleWindow) -> dict:
        raise NotImplementedError


@cache
def per_cpu_record(cpus: int) -> type:
    """A tuple type of ``cpus`` figures whose plain form (:func:`~fructosa.sensors.base.as_plain`,
    which makes a dict of any tuple's ``_fields`` and values) is ``{0: …, 1: …}``: CPUPercent's
    sample, which the agent then takes as it takes psutil's tuples, without a dict per tick. One
    type per number of CPUs, so that a type fixes its fields (the agent's layouts rely on it)."""
    return type(f"PerCPUFigures{cpus}", (tuple,), {"__slots__": (), "_fields": tuple(range(cpus))})


@register
class CPUPercent(_OwnWindowSensor):
    """Utilisation of each CPU in percent since the sensor's previous sample.

    Paths: ``HOST.CPUPercent.N`` per CPU (as 0.3.2), ``HOST.CPUPercent.total``
    with ``total = yes`` (all CPUs' busy time over all their time, as
    ``psutil.cpu_percent()`` counts it). Measured between this sensor's own
    two readings of the CPU times, never blocking: the first sample after a
    start (or reload) only takes the reference and sends nothing.
    """

    description = "CPU utilisation in percent, per CPU and optionally in total"
    default_interval = 10.0
    options = (
        Option("percpu", bool, True, "one series per CPU: HOST.CPUPercent.N"),
        Option("total", bool, False, "also the average over all CPUs: HOST.CPUPercent.total"),
    )

    def shape(self, raw: dict) -> dict | None:
        deltas = per_cpu_deltas(raw)
        if deltas is None:
            return NO_SAMPLE  # no window to rate over yet (see per_cpu_deltas): nothing to send
        shaped: dict[Any, float] = {}
        if self.settings["percpu"]:
            shaped.update(enumerate(busy_percent(cpu) for cpu in deltas))
        if self.settings["total"]:
            shaped["total"] = busy_percent(summed(deltas))
        return shaped

    def measure_compact(self) -> Any:
        if not self.settings["percpu"] or self.settings["total"]:
            return super().measure_compact()  # the dict shape_window makes
        window = self._times.window()
        if window is None:
            return NO_SAMPLE
        percents = window.busy_percents()
        return per_cpu_record(len(percents))(percents)

    def shape_window(self, window: TupleWindow) -> dict:
        shaped: dict[Any, float] = {}
        if self.settings["percpu"]:
            shaped.update(enumerate(window.busy_percents()))
        if self.settings["total"]:
            shaped["total"] = window.busy_percent_of(*window.summed())
        return shaped


@register
class CPUTimes(Sensor):
    """Seconds the CPUs spent in each mode since boot (counters).

    Paths: ``HOST.CPUTimes.FIELD`` (user, system, idle, iowait, steal…), and
    ``HOST.CPUTimes.cpuN.FIELD`` with ``percpu = yes``. Graph them with
    ``perSecond()``.
    """

    description = "cumulative CPU time per mode (user, system, idle, iowait…)"
    default_interval = 30.0
    blocking = False  # reads /proc or /sys only
    options = (PERCPU_TIMES,)

    def read(self) -> Any:
        per_cpu = psutil.cpu_times(percpu=True) if self.settings["percpu"] else None
        return {"total": psutil.cpu_times(), "per_cpu": per_cpu}

    def measure_compact(self) -> Any:
        return self.measure() if self.settings["percpu"] else psutil.cpu_times()

    def compact_reader(self) -> Callable[[], Any]:
        return self.measure_compact if self.settings["percpu"] else psutil.cpu_times

    def shape(self, raw: dict) -> dict:
        return _with_per_cpu(raw["total"], raw["per_cpu"])


@register
class CPUTimesPercent(_OwnWindowSensor):
    """Share of CPU time per mode in percent since the sensor's previous sample.

    Paths: ``HOST.CPUTimesPercent.FIELD``, plus ``cpuN.FIELD`` with ``percpu = yes``.
    The fields of one sample add up to 100 (give or take rounding; ``guest``
    and ``guest_nice`` are already part of ``user`` and ``nice``). Measured
    between this sensor's own two readings, never blocking: the first sample
    after a start (or reload) only takes the reference and sends nothing.
    """

    description = "CPU time per mode in percent since the previous sample"
    default_interval = 10.0
    options = (PERCPU_TIMES,)

    def shape(self, raw: dict) -> dict | None:
        deltas = per_cpu_deltas(raw)
        if deltas is None:
            return NO_SAMPLE  # no window to rate over yet (see per_cpu_deltas): nothing to send
        per_cpu = [mode_percents(cpu) for cpu in deltas] if self.settings["percpu"] else None
        return _with_per_cpu(mode_percents(summed(deltas)), per_cpu)

    def measure_compact(self) -> Any:
        if self.settings["percpu"]:
            return super().measure_compact()  # the dict shape_window makes
        window = self._times.window()
        return NO_SAMPLE if window is None else window.total_modes()  # psutil's tuple of the modes

    def shape_window(self, window: TupleWindow) -> dict:
        per_cpu = None
        if self.settings["percpu"]:
            per_cpu = [window.mode_percents_of(row, total) for row, total in zip(window.rows, window.totals)]  # noqa: B905
        return _with_per_cpu(window.mode_percents_of(*window.summed()), per_cpu)


@register
class CPUCount(Sensor):
    """Number of CPUs: ``HOST.CPUCount`` (logical CPUs, or cores with ``logical = no``)."""

    description = "number of logical CPUs (or physical cores)"
    default_interval = 300.0
    blocking = False  # reads /proc or /sys only
    options = (Option("logical", bool, True, "count logical CPUs (hyperthreads); no: physical cores"),)

    def read(self) -> Any:
        return psutil.cpu_count(logical=self.settings["logical"])


@register
class CPUStats(Sensor):
    """Kernel counters since boot: ``HOST.CPUStats.ctx_switches``, ``interrupts``,
    ``soft_interrupts``, ``syscalls``. Graph them with ``perSecond()``."""

    description = "context switches, interrupts, soft interrupts and syscalls (counters)"
    default_interval = 30.0
    blocking = False  # reads /proc or /sys only
    one_tuple = True

    def read(self) -> Any:
        return psutil.cpu_stats()

    def compact_reader(self) -> Callable[[], Any]:
        return psutil.cpu_stats


@register
class CPUFreq(Sensor):
    """CPU frequency in MHz: ``HOST.CPUFreq.current``, ``min``, ``max``
    (0.3.2 paths; min and max only where the kernel knows them), plus
    ``cpuN.current`` per CPU with ``percpu = yes``.
    Hosts without cpufreq support (some VMs) report it once and idle."""

    description = "CPU frequency in MHz (current, min, max)"
    default_interval = 300.0
    blocking = False  # reads /proc or /sys only
    options = (Option("percpu", bool, False, "also the frequency of each CPU below cpuN"),)

    def read(self) -> Any:
        if not hasattr(psutil, "cpu_freq"):
            raise SensorUnsupported("psutil has no cpu_freq on this platform")
        per_cpu = psutil.cpu_freq(percpu=True) if self.settings["percpu"] else None
        return {"total": psutil.cpu_freq(), "per_cpu": per_cpu}

    def shape(self, raw: dict) -> dict:
        if not raw["total"]:
            raise SensorUnsupported("the kernel reports no CPU frequency")
        # psutil reports an unknown min/max (typical in VMs) as 0.
        total = {key: value for key, value in raw["total"].items() if value or key == "current"}
        per_cpu = [{"current": cpu["current"]} for cpu in raw["per_cpu"] or ()]
        return _with_per_cpu(total, per_cpu)
