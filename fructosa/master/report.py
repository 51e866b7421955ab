"""What lmaster says about itself: the status report, liveness, self-metrics.

Every ``self metrics interval`` it

* forgets the hosts not heard from for ``forget agents after`` seconds
  (:meth:`~fructosa.master.agents.AgentTable.forget_silent`), one log line for all;
* sends per-node liveness through the flow, so it reaches every sink and tap
  like agents' data: ``HOST.fructosa.up`` (1 while any connection of the host
  is live: heard from within two of its heartbeats) and
  ``HOST.fructosa.seconds_since_data``;
* sends its own health to carbon's plaintext port with graphyte
  (``fructosa.lmaster.HOST.*``: agents, counters, the sinks' counters, CPU, memory);
* rewrites the status file that ``lmaster status`` shows: the agent table
  and a report an admin reads.

A failure here is logged, never allowed to stop the relaying.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING

import graphyte

from ..daemon import write_status
from ..graphite_paths import Datapoint, short_hostname
from ..ratelog import RateLimitedLog
from ..selfstats import ProcessUsage
from ..spool import Spool
from .agents import AgentTable
from .flow import Flow
from .server import ServerCounters

if TYPE_CHECKING:
    from ..config import MasterConfig

log = logging.getLogger(__package__)  # one logger for all of lmaster, as admins filter on it


class Reporter:
    """Liveness, self-metrics and the status file of one lmaster; see the module docstring."""

    def __init__(
        self,
        cfg: MasterConfig,
        agents: AgentTable,
        flow: Flow,
        server_counters: ServerCounters,
        spool: Spool | None = None,
        status_file: str | None = None,
    ) -> None:
        self.config = cfg
        self.agents = agents
        self.flow = flow
        self.server_counters = server_counters
        self.spool = spool
        self.status_file = status_file
        self.started = time.time()
        self._usage = ProcessUsage()
        self.last_self_metrics: dict[str, float] = {}
        """The last report's self-metrics: what /metrics serves (sampling again would shift the CPU windows)."""
        self._sender: graphyte.Sender | None = None
        self._log = RateLimitedLog(log, period=300.0)

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Open the graphyte sender for self-metrics, when they are on and carbon is used."""
        graphite = self.config.graphite
        if not self.config.self_metrics or not graphite.enabled:
            return
        prefix = ".".join(
            part for part in (graphite.prefix, "fructosa", "lmaster", short_hostname(socket.gethostname())) if part
        )
        self._sender = graphyte.Sender(
            graphite.host, graphite.plaintext_port, prefix=prefix, interval=1, queue_size=10_000, timeout=5
        )

    def stop(self) -> None:
        if self._sender is not None:
            self._sender.stop()
            self._sender = None

    def reconfigure(self, cfg: MasterConfig) -> None:
        """Reload: new interval, and self-metrics to where ``cfg`` says."""
        self.stop()
        self.config = cfg
        self.start()

    async def run(self) -> None:
        """Report every ``self metrics interval`` until cancelled."""
        while True:
            await asyncio.sleep(self.config.self_metrics_interval)
            self.report(time.time())

    # -- one report --------------------------------------------------------------

    def report(self, now: float) -> None:
        """Liveness, self-metrics and the status file; a failure here is logged,
        never allowed to stop the relaying."""
        try:
            self._report(now)
        except Exception as error:
            self._log.log(logging.ERROR, "report", "self-report failed: %s: %s", type(error).__name__, error)

    def _report(self, now: float) -> None:
        self.forget_silent(now)
        self.agents.update_rates(self.config.self_metrics_interval)
        self.flow.emit(self.liveness(now))
        self.last_self_metrics = self.self_metrics() if self.config.self_metrics else {}
        if self._sender is not None:
            for key, value in self.last_self_metrics.items():
                self._sender.send(key, value, now)
        if self.status_file:
            try:
                write_status(self.status_file, self.status(now))
            except OSError as error:
                self._log.log(logging.WARNING, "status", "cannot write status file %s: %s", self.status_file, error)

    def forget_silent(self, now: float) -> list[str]:
        """Forget the hosts not heard from for ``forget agents after`` seconds (logged in one line)."""
        after = self.config.forget_agents_after
        forgotten = self.agents.forget_silent(now, after)
        if forgotten:
            shown = ", ".join(sorted(forgotten)[:10]) + (", …" if len(forgotten) > 10 else "")
            log.info("forgot %d agents not heard from for %g s: %s", len(forgotten), after, shown)
        return forgotten

    def liveness(self, now: float) -> list[Datapoint]:
        """``HOST.fructosa.up`` of every known agent, and ``seconds_since_data`` of those that ever sent."""
        datapoints: list[Datapoint] = []
        for state in self.agents:
            path = f"{short_hostname(state.host)}.fructosa"
            up = self.agents.check_liveness(state, now)  # a change is an event for the live stream
            datapoints.append((f"{path}.up", (now, 1.0 if up else 0.0)))
            if state.last_data:
                datapoints.append((f"{path}.seconds_since_data", (now, round(now - state.last_data, 1))))
        return datapoints

    def self_metrics(self) -> dict[str, float]:
        """lmaster's own health, by metric name below ``fructosa.lmaster.HOST``."""
        usage = self._usage.sample()
        counters = self.flow.counters
        metrics: dict[str, float] = {
            "agents_connected": self.agents.connected(),
            "samples_in_per_second": sum(state.samples_per_second for state in self.agents),
            "connections_rejected": self.server_counters.rejected,
            "batches_duplicate": counters.duplicates,
            "samples_malformed": counters.bad_samples,
            "datapoints_in": counters.datapoints,
            "datapoints_refused": counters.bad_datapoints,
            "own_datapoints_dropped": counters.own_dropped,
            "sink_pressure": self.flow.pressure(),
            "congestions": self.flow.admission.counters.congestions,
            "cpu_percent": usage["cpu_percent"],
            "rss_bytes": usage["rss_bytes"],
        }
        for sink in self.flow.sinks:
            metrics.update({f"{sink.name}.{key}": value for key, value in sink.stats().items()})
        if self.spool is not None:
            metrics["spool_bytes"] = self.spool.bytes
        return metrics

    # -- the status file -------------------------------------------------------------

    def status(self, now: float) -> dict:
        """What the status file holds: the agent table, the sinks' counters, the report text."""
        rows = [
            {
                "host": state.host,
                "address": state.address,
                "agent": state.agent,
                "up": state.up(now),
                "connected_since": state.connected_since,
                "connections": len(state.links),
                "last_seen": state.last_frame,
                "last_data": state.last_data,
                "samples_per_second": round(state.samples_per_second, 2),
                "backlog": state.backlog,
            }  # fmt: skip
            for state in sorted(self.agents, key=lambda state: state.host)
        ]
        sinks = {sink.name: sink.stats() for sink in self.flow.sinks}
        return {"agents": rows, "sinks": sinks, "report": self.status_report(rows, now)}

    def status_report(self, rows: list[dict], now: float) -> str:
        """The text ``lmaster status`` prints: the summary, then one line per agent."""

        def ago(when: float) -> str:
            return "never" if not when else f"{now - when:.0f} s ago"

        lines = [
            f"up since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}; {self.summary()}",
            f"{len(rows)} agents ({sum(row['up'] for row in rows)} up):",
            f"  {'host':<20} {'up':<4} {'address':<22} {'agent':<18} {'connected':<12} {'last data':<12} "
            f"{'samples/s':>9} {'backlog':>8}",
        ]
        for row in rows:
            others = row["connections"] - 1  # a host may have several live connections
            address = row["address"] + (f" +{others}" if others > 0 else "")
            lines.append(
                f"  {row['host']:<20} {'yes' if row['up'] else 'NO':<4} {address:<22} {row['agent']:<18} "
                f"{ago(row['connected_since']) if row['up'] else '-':<12} {ago(row['last_data']):<12} "
                f"{row['samples_per_second']:>9.2f} {row['backlog']:>8}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """Counters in one line (the status report's first, and lmaster's last log line)."""
        server, flow = self.server_counters, self.flow.counters
        sinks = ", ".join(f"{sink.name} {sink.stats()}" for sink in self.flow.sinks)
        return (
            f"{server.connections} connections ({server.rejected} rejected), {flow.frames} batches "
            f"({flow.duplicates} duplicates), {flow.samples} samples ({flow.bad_samples} malformed), "
            f"{flow.datapoints} datapoints ({flow.bad_datapoints} refused); {sinks}"
        )
