"""lagent's view of itself: self-metrics (``HOST.fructosa.agent.*`` in Graphite)
and the status file that ``lagent status`` reads.

Both come from one measurement every ``self metrics interval``. The self-metrics
go out every time; the status file, read only when someone runs ``lagent status``,
is rewritten by the first :data:`STATUS_EAGER_REPORTS` reports after a start or
a reload (when someone is likely checking that the agent came up right), at a
report that finds what it tells about trouble changed (:data:`STATUS_WATCHED`),
and otherwise once every :data:`STATUS_MAX_AGE` seconds: replacing a file costs
three times what the measurement does, and each report is paid for every 10 s
on every compute node.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..adaptive import next_due
from ..daemon import write_status
from ..selfstats import ProcessUsage
from .scheduler import SAME_TICK

if TYPE_CHECKING:
    from .lagent import Agent

log = logging.getLogger(__package__)


STATUS_MAX_AGE = 60.0
"""Seconds: the status file is rewritten at least every this many seconds' worth of reports
(every report when ``self metrics interval`` is longer), even when nothing in
:data:`STATUS_WATCHED` changed, so the rates, counts and CPU/RSS it shows are at most this old."""

STATUS_WATCHED = ("connected", "reconnects", "dropped_samples", "spool_batches", "interval")
"""Self-metrics that tell of trouble or of a change of plan: the status file is rewritten at
the first report (at most ``self metrics interval`` later) that finds any of them changed."""

STATUS_EAGER_REPORTS = 2
"""Reports after a start or a reload that write the status file whatever they find: the first one's
rates cover only the part of an interval since then, the second is the first with a whole interval's."""

RIDE_MARGIN = 0.0005
"""Seconds the report's own timer waits past its grid point: a tick of the sensors at that point
fires first and takes the report along (:meth:`Reporter.ride`); the timer is then cancelled."""


class Reporter:
    """Every ``self metrics interval`` seconds, on the sensors' grid: measure the agent,
    record it as the ``fructosa`` sensor's sample (when enabled) and write the status file.

    When sensors tick at the same grid point, the report rides on their tick
    (:meth:`ride`, called by the scheduler): its sample leaves in the tick's block and
    batch, with no wakeup, task step or batch of its own. Otherwise its own timer reports."""

    def __init__(self, agent: Agent, status_file: str | None) -> None:
        self.agent = agent
        self.status_file = status_file
        self._usage = ProcessUsage()
        self.due = math.inf
        """Loop time of the next report (a tick of the sensors from then on takes it along: :meth:`ride`)."""
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous = (0, 0.0)
        """Samples counted and monotonic time at the previous report."""
        self._status_watched: tuple | None = None
        """The :data:`STATUS_WATCHED` values in the status file last written; None: not written (yet)."""
        self._reports_unwritten = 0
        """Reports since the status file was last written."""
        self._config_seen: object = None
        """The configuration at the previous report: another one means a reload."""
        self._eager_reports = 0
        """Reports left that write the status file whatever they find (after a start or a reload)."""
        self._intervals: tuple[tuple, dict[str, float]] = ((), {})
        """(what the sensors' intervals were computed from, those intervals): see :meth:`intervals`."""

    async def run(self) -> None:
        """Report until cancelled (the agent stops)."""
        loop = asyncio.get_running_loop()
        self._previous = (self.agent.counters["samples"], time.monotonic())
        self._arm(loop, loop.time())
        scheduler = self.agent.scheduler
        scheduler.riders.append(self)
        try:
            await loop.create_future()  # the reports run from the timer or the ticks
        finally:
            scheduler.riders.remove(self)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def ride(self, now: float) -> bool:
        """At a tick of the sensors (loop time ``now``): report now if due, its sample taken
        with the tick's. Whether a sample was taken."""
        if now + SAME_TICK < self.due:
            return False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        taken = self._report(self.agent.take)
        assert self._loop is not None
        self._arm(self._loop, now)
        return taken

    def _on_timer(self) -> None:
        """No tick at the grid point: report on its own."""
        self._timer = None
        self._report(self.agent.record)
        assert self._loop is not None
        self._arm(self._loop, self._loop.time())

    def _arm(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        self._loop = loop
        origin = self.agent.scheduler.origin
        self.due = next_due(now if origin is None else origin, self.agent.config.self_metrics_interval, now)
        self._timer = loop.call_at(self.due + RIDE_MARGIN, self._on_timer)

    def _report(self, record: Callable[[str, object], None]) -> bool:
        """Measure the agent, hand its sample to ``record``, write the status file; whether a sample was recorded."""
        agent = self.agent
        samples, now = agent.counters["samples"], time.monotonic()
        previous_samples, previous_time = self._previous
        self._previous = (samples, now)
        rate = (samples - previous_samples) / (now - previous_time) if now > previous_time else 0.0
        try:
            metrics = self.self_metrics(rate)
        except Exception as error:  # reporting must never stop measuring
            log.error("self-metrics failed: %s: %s", type(error).__name__, error)
            return False
        if agent.config.self_metrics:
            record("fructosa", {"agent": metrics})
        if self.status_file and self._status_due(metrics):
            try:
                write_status(self.status_file, {"agent": metrics, "report": self.report(metrics)})
            except OSError as error:
                log.debug("cannot write status file %s: %s", self.status_file, error)
                self._status_watched = None  # the next report tries again
        return agent.config.self_metrics

    def _status_due(self, metrics: dict) -> bool:
        """Whether this report rewrites the status file: the first :data:`STATUS_EAGER_REPORTS` after a
        start or a reload, one that finds a :data:`STATUS_WATCHED` value changed, and otherwise one in
        every :data:`STATUS_MAX_AGE` seconds' worth of reports. Counted in reports,
        not read off a clock: the reports keep to their grid, and a count cannot be off by a clock's
        jitter at the boundary."""
        config = self.agent.config
        reports_per_write = max(1, int(STATUS_MAX_AGE // config.self_metrics_interval))
        if config is not self._config_seen:
            self._config_seen, self._eager_reports = config, STATUS_EAGER_REPORTS
        watched = tuple([metrics[name] for name in STATUS_WATCHED])
        self._reports_unwritten += 1
        if self._eager_reports:
            self._eager_reports -= 1
        elif watched == self._status_watched and self._reports_unwritten < reports_per_write:
            return False
        self._status_watched, self._reports_unwritten = watched, 0
        return True

    def self_metrics(self, samples_per_second: float) -> dict:
        """The agent's health: ``HOST.fructosa.agent.*`` in Graphite."""
        agent, sender = self.agent, self.agent.sender
        spool = sender.spool
        usage = self._usage.sample()
        return {
            "samples_per_second": round(samples_per_second, 3),
            "queued_samples": len(agent.queue),
            "unacknowledged_batches": len(sender.session.in_flight),
            "spool_batches": len(spool) if spool else 0,
            "spool_bytes": spool.bytes if spool else 0,
            "dropped_samples": agent.dropped_samples,
            "batches_sent": sender.session.sent,
            "reconnects": sender.session.connects,
            "connected": sender.session.connected.is_set(),
            "cpu_percent": usage["cpu_percent"],
            "rss_bytes": usage["rss_bytes"],
            "interval": self.intervals(),
        }

    def intervals(self) -> dict[str, float]:
        """Each running sensor's current interval, recomputed only when the running sensors
        (a reload) or an adaptive sensor's interval (a switch) changed since the previous report:
        their fingerprint, two tuples built in C, costs less than asking the plan per sensor."""
        agent = self.agent
        running, schedules = agent.scheduler.running, agent.plan.schedules
        basis = (tuple(running.values()), tuple([schedule.interval for schedule in schedules.values()]))
        if basis != self._intervals[0]:
            self._intervals = (basis, {name: agent.plan.interval(sensor) for name, (sensor, _) in running.items()})
        return self._intervals[1]

    def report(self, metrics: dict) -> str:
        """One line for ``lagent status``."""
        agent = self.agent
        connected = "connected to" if metrics["connected"] else "NOT connected to"
        return (
            f"host {agent.config.hostname}, {connected} lmaster {agent.sender.address}; "
            f"{len(agent.scheduler.running)} sensors, {metrics['samples_per_second']:.2f} samples/s, "
            f"{metrics['queued_samples']} queued, {metrics['unacknowledged_batches']} unacknowledged, "
            f"{metrics['spool_batches']} spooled ({metrics['spool_bytes']} bytes), "
            f"{metrics['dropped_samples']} dropped, CPU {metrics['cpu_percent']:.1f} %, "
            f"RSS {metrics['rss_bytes'] / 1e6:.1f} MB"
        )
