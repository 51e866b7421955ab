"""lagent's view of itself: self-metrics (``HOST.fructosa.agent.*`` in Graphite)
and the status file that ``lagent status`` reads."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..adaptive import next_due
from ..daemon import write_status
from ..selfstats import ProcessUsage

if TYPE_CHECKING:
    from .lagent import Agent

log = logging.getLogger(__package__)


class Reporter:
    """Every ``self metrics interval`` seconds, on the sensors' grid: measure the agent,
    record it as the ``fructosa`` sensor's sample (when enabled) and write the status file."""

    def __init__(self, agent: Agent, status_file: str | None) -> None:
        self.agent = agent
        self.status_file = status_file
        self._usage = ProcessUsage()

    async def run(self) -> None:
        agent = self.agent
        loop = asyncio.get_running_loop()
        previous_samples, previous_time = agent.counters["samples"], time.monotonic()
        while True:
            # On the sensors' grid: with an interval they share, the report rides on their wakeup.
            origin = agent.scheduler.origin
            now = loop.time()
            await sleep_until(
                loop, next_due(now if origin is None else origin, agent.config.self_metrics_interval, now)
            )
            now = time.monotonic()
            rate = (agent.counters["samples"] - previous_samples) / (now - previous_time)
            previous_samples, previous_time = agent.counters["samples"], now
            try:
                metrics = self.self_metrics(rate)
            except Exception as error:  # reporting must never stop measuring
                log.error("self-metrics failed: %s: %s", type(error).__name__, error)
                continue
            if agent.config.self_metrics:
                agent.record("fructosa", {"agent": metrics})
            if self.status_file:
                try:
                    write_status(self.status_file, {"agent": metrics, "report": self.report(metrics)})
                except OSError as error:
                    log.debug("cannot write status file %s: %s", self.status_file, error)

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
            "interval": {name: agent.plan.interval(sensor) for name, (sensor, _) in agent.scheduler.running.items()},
        }

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


async def sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    """Sleep until loop time ``when`` exactly (``asyncio.sleep`` would add the time it is called at)."""
    woken = loop.create_future()
    timer = loop.call_at(when, lambda: woken.done() or woken.set_result(None))
    try:
        await woken
    finally:
        timer.cancel()
