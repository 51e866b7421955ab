"""The Master: lmaster's parts put together, and their run/stop/reload lifecycle.

The parts, each in its own module: the agent table (:mod:`.agents`), the
listening side and the per-connection frame loop (:mod:`.server`), the flow
of checked blocks to the sinks and taps (:mod:`.flow`), the status report,
liveness and self-metrics (:mod:`.report`), and, with ``[slurm]``, the job
events poller (:mod:`fructosa.jobs.events`), whose datapoints take the flow,
and, with ``[http]``, the HTTP API and page (:mod:`.web`), which reads the
agent table and a latest-values tap on the same event loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import ssl
import time

from ..alarms.service import AlarmService, EventListeners
from ..config import MasterConfig
from ..graphite_paths import Datapoint
from ..http.actions import add_action_routes
from ..http.alarms import add_alarm_routes
from ..jobs.events import JobEventsPoller
from ..sinks import Sink
from ..sinks.build import build_sinks
from ..spool import Spool
from ..taps import Tap
from .agents import AgentTable
from .flow import Flow
from .report import Reporter
from .server import AgentServer
from .web import HttpFace

log = logging.getLogger(__package__)  # one logger for all of lmaster, as admins filter on it

SINK_CLOSE_TIMEOUT = 10.0
TAP_CLOSE_TIMEOUT = 5.0


class Master:
    """lmaster: accepts agents and relays what they send to its sinks and taps."""

    def __init__(
        self,
        cfg: MasterConfig,
        listen_sockets: list[socket.socket],
        spool: Spool | None = None,
        tls: ssl.SSLContext | None = None,
        status_file: str | None = None,
        sinks: list[Sink] | None = None,
        taps: list[Tap] | None = None,
    ) -> None:
        """``sinks`` default to what ``cfg`` asks for (:func:`~fructosa.sinks.build.build_sinks`)."""
        self.config = cfg
        self.sinks = build_sinks(cfg, spool) if sinks is None else sinks
        self.taps = list(taps) if taps is not None else []
        self.agents = AgentTable()
        if status_file:
            self.agents.load(status_file)
        self.http = (
            HttpFace(cfg.http, self.agents, cfg.jobs, cfg.slurm, cfg.graphite.prefix) if cfg.http is not None else None
        )
        if self.http is not None:
            self.taps.extend(self.http.taps)
        # Alarms and actions ([alarms], [alarm:NAME], [action:NAME]): evaluated with or without [http], which adds
        # their routes. Firing levels go out through emit; transition events to alarm_events, where the live
        # stream registers its publish. Job CPUs come from the [slurm] poller once it has polled.
        self.slurm_poller: JobEventsPoller | None = None
        self.alarm_events = EventListeners([self.publish_event])  # to the live stream's clients (with [http])
        self.alarms = AlarmService.from_config(
            cfg,
            heartbeat_of=lambda host: getattr(self.agents.get(host), "heartbeat_interval", 30.0),
            job_cpus=lambda: {
                job: info.cpus for job, info in ((self.slurm_poller and self.slurm_poller.known) or {}).items()
            },
        )
        self.alarms.bind(emit=self.emit, on_event=self.alarm_events)
        self.taps.append(self.alarms)
        if self.http is not None:
            add_alarm_routes(self.http.app, self.alarms)
            add_action_routes(self.http.app, self.alarms.actions)
        self.flow = Flow(self.sinks, self.taps)
        self.agents.forgetters.append(self.flow.forget)  # a forgotten host leaves the taps too
        self.server = AgentServer(cfg, listen_sockets, self.flow, self.agents, tls)
        self.reporter = Reporter(cfg, self.agents, self.flow, self.server.counters, spool, status_file)
        # Prometheus: /metrics with the last report's self-metrics; scraped targets enter through emit
        if self.http is not None:
            spool_dir = str(spool.directory) if spool is not None else None
            self.http.add_prometheus(self.emit, lambda: self.reporter.last_self_metrics, spool_dir)

    def emit(self, datapoints: list[Datapoint]) -> None:
        """Send datapoints the master makes itself (liveness, job events) to every sink and tap."""
        self.flow.emit(datapoints)

    def publish_event(self, event: dict) -> None:
        """live stream: an event for every ``/api/stream`` client (jobs, alarms); nothing without ``[http]``."""
        if self.http is not None:
            self.http.publish_event(event)

    def summary(self) -> str:
        return self.reporter.summary()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then end the connections, flush the sinks and stop."""
        if self.server.secret is None:
            log.warning("no secret file configured: any host that reaches the port can send data")
        if not self.sinks:
            log.warning(
                "no sink enabled ([Graphite] enabled = no): samples are accepted and acknowledged but kept nowhere"
            )
        workers = [asyncio.create_task(sink.run(), name=f"sink-{sink.name}") for sink in self.sinks]
        workers += [asyncio.create_task(tap.run(), name=f"tap-{tap.name}") for tap in self.taps]
        await self.server.start()
        if self.http is not None:
            await self.http.start()
            workers.append(asyncio.create_task(self.http.run(), name="http-prune"))
        self.reporter.start()
        reporter = asyncio.create_task(self.reporter.run(), name="reporter")
        slurm_poller = None
        if self.config.slurm.enabled:  # job events and counts ([slurm]); ends when stop is set
            jobs = self.http.jobs if self.http is not None else None  # the job tracker hears of starts and ends
            poller = self.slurm_poller = JobEventsPoller(
                self.config.slurm, self.emit, on_poll=jobs.tracker.polled if jobs else None, publish=self.publish_event
            )
            slurm_poller = asyncio.create_task(poller.run(stop), name="slurm-poller")
        settle_garbage_collector()
        try:
            await stop.wait()
        finally:
            log.info("shutting down: closing %d agent connections", self.server.connections)
            reporter.cancel()
            if self.http is not None:
                await self.http.stop()
            await self.server.stop()
            await asyncio.gather(reporter, return_exceptions=True)
            if slurm_poller is not None:
                slurm_poller.cancel()
                await asyncio.gather(slurm_poller, return_exceptions=True)
            self.reporter.report(time.time())  # last liveness and status: every agent is now disconnected
            for sink in self.sinks:
                await sink.close(SINK_CLOSE_TIMEOUT)
            for tap in self.taps:
                try:
                    await asyncio.wait_for(tap.close(), TAP_CLOSE_TIMEOUT)
                except Exception as error:  # one tap's failure must not stop the shutdown
                    log.error("tap %s did not close cleanly: %s: %s", tap.name, type(error).__name__, error)
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.flow.close()
            self.reporter.stop()
            log.info("lmaster stopped: %s", self.summary())

    def reload(self, new: MasterConfig) -> None:
        """Apply a new configuration; agent connections stay up.

        Each part takes what it can change while running (limits, secret,
        self-metrics, each sink its own settings); what needs another set of
        sockets, sinks or pollers is logged as taking effect at the next restart.
        """
        old = self.config
        for what, before, after in (
            ("listening address", (old.listen_host, old.listen_port), (new.listen_host, new.listen_port)),
            ("TLS settings", (old.link.tls_cert, old.link.tls_key, old.link.tls_ca),
             (new.link.tls_cert, new.link.tls_key, new.link.tls_ca)),
            ("spool", old.spool, new.spool),
            ("[slurm]", old.slurm, new.slurm),
            ("[Graphite] enabled", old.graphite.enabled, new.graphite.enabled),
            ("[Graphite] destinations",
             (len(old.graphite.destinations) > 1, old.graphite.replication_factor, old.graphite.diverse_replicas),
             (len(new.graphite.destinations) > 1, new.graphite.replication_factor, new.graphite.diverse_replicas)),
            ("[upstream] (added, removed or its TLS settings)", _upstream_tls(old), _upstream_tls(new)),
        ):  # fmt: skip
            if before != after:
                log.warning("reload: a change of %s takes effect at the next restart", what)
        if self.http is not None:
            self.http.reconfigure(new.http)
            if self.http.jobs is not None:  # [jobs] limits and flag thresholds
                self.http.jobs.tracker.reconfigure(new.jobs.limits(), new.jobs.thresholds)
        elif new.http is not None:
            log.warning("reload: adding [http] takes effect at the next restart")
        self.server.reconfigure(new)
        self.alarms.reconfigure(new)  # alarms: the file's rules and actions re-read, run-time ones kept
        for sink in self.sinks:
            sink.reconfigure(new)
        self.config = new
        self.reporter.reconfigure(new)


GC_THRESHOLDS = (10_000, 10, 1_000)
"""The collector's thresholds once lmaster runs (Python's defaults are 700, 10, 10)."""


def settle_garbage_collector() -> None:
    """Once lmaster is built (configuration, sinks, taps, listening sockets,
    every module imported), move what exists into the collector's permanent
    generation: it lives as long as the process, and no collection need walk
    it again. Collected first, so that start-up's own garbage is not kept.

    Then fewer collections (:data:`GC_THRESHOLDS`). What lmaster makes per
    frame and per batch is freed by reference counting (no reference
    cycles: the GC probe's census in benchmarks/ finds none under load), so
    collections find nearly nothing to free, yet each full one walks every
    object of every connection (about 46 per agent: 100-400 ms with 5,000
    agents). With the defaults, the objects that live a few seconds (batches
    waiting for carbon, the resend window) brought one every 10 s or less;
    young collections 14× rarer and full ones 100× rarer leave hours between
    two (the 5,000-agent fan-in makes a young one every 2 s, so a full one
    every 5-6 h), and the garbage of a closed connection waits that long.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _upstream_tls(cfg: MasterConfig) -> tuple | None:
    """None without ``[upstream]``, else its TLS settings (read once, when its sink is built);
    its address and secret are the upstream sink's to compare."""
    if cfg.upstream is None:
        return None
    link = cfg.upstream.link
    return (link.tls, link.tls_cert, link.tls_key, link.tls_ca)
