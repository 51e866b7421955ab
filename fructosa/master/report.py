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

With thousands of agents one report is tens of milliseconds of Python, and
every frame arriving meanwhile waits for it. The periodic report
(:meth:`Reporter.report_spread`) therefore goes through the agents in
steps of :data:`AGENTS_PER_STEP`, giving the event loop back between steps,
emits each step's liveness as one block built from paths cached per agent
(no tuple per datapoint), and only copies each agent's status fields on the
loop: the rows, the report text and the JSON are made and written by a
worker thread. What is reported is the same as :meth:`Reporter.report`
(used at shutdown and in tests) reports in one go.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from array import array
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import graphyte

from ..daemon import write_status
from ..graphite_paths import Datapoint, short_hostname
from ..ratelog import RateLimitedLog
from ..selfstats import ProcessUsage
from ..spool import Spool
from ..wire.blocks import Block
from .agents import AgentState, AgentTable
from .flow import Flow
from .server import ServerCounters

if TYPE_CHECKING:
    from ..config import MasterConfig

log = logging.getLogger(__package__)  # one logger for all of lmaster, as admins filter on it

AGENTS_PER_STEP = 500
"""Agents one step of the periodic report handles before the event loop runs again (~1-2 ms of work)."""

StatusFields = tuple[str, str, str, bool, float, int, float, float, float, int]
"""One agent's status row as copied on the event loop: the values of :data:`STATUS_KEYS`, in order."""

STATUS_KEYS = (
    "host", "address", "agent", "up", "connected_since", "connections", "last_seen", "last_data",
    "samples_per_second", "backlog",
)  # fmt: skip
"""The keys of a row of the status file's agent table."""


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
        self._status_writer: ThreadPoolExecutor | None = None
        """The worker thread that builds and writes the status file of the periodic report (made on first use)."""
        self._status_written: Future | None = None
        """The status file being written by that thread: a later report waits for it, so files never go back in time."""

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
        """Report every ``self metrics interval`` until cancelled, spread over the event loop's iterations."""
        while True:
            await asyncio.sleep(self.config.self_metrics_interval)
            await self.report_spread(time.time())

    # -- one report --------------------------------------------------------------

    def report(self, now: float) -> None:
        """Liveness, self-metrics and the status file, all at once (at shutdown, and in tests);
        a failure here is logged, never allowed to stop the relaying."""
        try:
            self._report(now)
        except Exception as error:
            self._log.log(logging.ERROR, "report", "self-report failed: %s: %s", type(error).__name__, error)

    async def report_spread(self, now: float) -> None:
        """What :meth:`report` does, in steps of :data:`AGENTS_PER_STEP` agents with the
        event loop running between them, the status file made and written by a worker thread."""
        try:
            await self._report_spread(now)
        except Exception as error:
            self._log.log(logging.ERROR, "report", "self-report failed: %s: %s", type(error).__name__, error)

    def _report(self, now: float) -> None:
        self._wait_for_status_file()
        self.forget_silent(now)
        self.agents.update_rates(self.config.self_metrics_interval)
        self.flow.emit(self.liveness(now))
        self._self_metrics(now)
        if self.status_file:
            try:
                write_status(self.status_file, self.status(now))
            except OSError as error:
                self._status_not_written(error)

    async def _report_spread(self, now: float) -> None:
        self.forget_silent(now)
        self.agents.update_rates(self.config.self_metrics_interval)
        states = list(self.agents)  # the agents of this report: those joining meanwhile wait for the next
        rows: list[StatusFields] = []
        for start in range(0, len(states), AGENTS_PER_STEP):
            if start:
                await asyncio.sleep(0)  # the frames that came meanwhile
            step = [state for state in states[start : start + AGENTS_PER_STEP] if self.agents.holds(state)]
            self.flow.emit(self.liveness_block(step, now))
            if self.status_file:
                rows += status_fields(step, now)
        self._self_metrics(now)
        if self.status_file:
            await self._write_status_off_loop(rows, now)

    def _self_metrics(self, now: float) -> None:
        self.last_self_metrics = self.self_metrics() if self.config.self_metrics else {}
        if self._sender is not None:
            for key, value in self.last_self_metrics.items():
                self._sender.send(key, value, now)

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
        return self.liveness_block(list(self.agents), now).datapoints()

    def liveness_block(self, states: Iterable[AgentState], now: float) -> Block:
        """:meth:`liveness` of ``states`` as one block: a path string joined from each agent's
        cached paths and two arrays, instead of two tuples and two f-strings per agent."""
        paths: list[bytes] = []
        values: list[float] = []
        check_liveness = self.agents.check_liveness
        for state in states:
            up_path, since_path = state.liveness_paths or liveness_paths(state)
            paths.append(up_path)
            values.append(1.0 if check_liveness(state, now) else 0.0)  # a change is an event for the live stream
            if state.last_data:
                paths.append(since_path)
                values.append(round(now - state.last_data, 1))
        return Block(b"\n".join(paths), array("d", (now,)) * len(values), array("d", values))

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
        sinks = {sink.name: sink.stats() for sink in self.flow.sinks}
        return self._status_of(status_fields(self.agents, now), now, self.summary(), sinks)

    def _status_of(self, fields: list[StatusFields], now: float, summary: str, sinks: dict) -> dict:
        """:meth:`status` from values copied on the event loop (also run by the status worker thread)."""
        rows = [dict(zip(STATUS_KEYS, row, strict=True)) for row in sorted(fields)]  # by host: hosts are unique
        return {"agents": rows, "sinks": sinks, "report": self.status_report(rows, now, summary)}

    async def _write_status_off_loop(self, fields: list[StatusFields], now: float) -> None:
        """Build and write the status file in the worker thread; the summary and the sinks'
        counters are read here, on the event loop, as the rest of lmaster changes them."""
        summary, sinks = self.summary(), {sink.name: sink.stats() for sink in self.flow.sinks}

        def build_and_write() -> None:
            write_status(self.status_file, self._status_of(fields, now, summary, sinks))

        self._wait_for_status_file()
        if self._status_writer is None:
            self._status_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="status-file")
        written = self._status_written = self._status_writer.submit(build_and_write)
        try:
            await asyncio.wrap_future(written)
        except OSError as error:
            self._status_not_written(error)

    def _wait_for_status_file(self) -> None:
        """Let the worker thread finish the status file it is writing (a report cancelled meanwhile:
        at shutdown the last report must not be overwritten by an older one)."""
        written, self._status_written = self._status_written, None
        if written is not None and not written.cancelled():
            try:
                written.result()
            except OSError as error:
                self._status_not_written(error)

    def _status_not_written(self, error: OSError) -> None:
        self._log.log(logging.WARNING, "status", "cannot write status file %s: %s", self.status_file, error)

    def status_report(self, rows: list[dict], now: float, summary: str | None = None) -> str:
        """The text ``lmaster status`` prints: the summary (``summary``, else :meth:`summary` now),
        then one line per agent."""

        def ago(when: float) -> str:
            return "never" if not when else f"{now - when:.0f} s ago"

        summary = self.summary() if summary is None else summary
        lines = [
            f"up since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}; {summary}",
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


def liveness_paths(state: AgentState) -> tuple[bytes, bytes]:
    """``HOST.fructosa.up`` and ``HOST.fructosa.seconds_since_data`` of ``state``, kept on it for the next reports."""
    path = f"{short_hostname(state.host)}.fructosa"
    state.liveness_paths = f"{path}.up".encode("ascii"), f"{path}.seconds_since_data".encode("ascii")
    return state.liveness_paths


def status_fields(states: Iterable[AgentState], now: float) -> list[StatusFields]:
    """Each agent's status row as a tuple (:data:`STATUS_KEYS`): all the event loop copies for the status file."""
    return [
        (
            state.host,
            state.address,
            state.agent,
            state.up(now),
            state.connected_since,
            len(state.links),
            state.last_frame,
            state.last_data,
            round(state.samples_per_second, 2),
            state.backlog,
        )  # fmt: skip
        for state in states
    ]
