"""lmaster's HTTP face (``[http]``): the API and page of :mod:`fructosa.http` over this lmaster's parts.

What it puts together: a :class:`~fructosa.taps.latest.LatestValues` tap
(the Master adds it to the flow's taps, so it sees every checked block), an
:class:`~.nodes.AgentNodes` view of the agent table, and the aiohttp server
on lmaster's own event loop. The relay comes first: handlers only read
in-memory tables, ``/api/nodes`` answers are reused for a second, the number
of connections is capped at accept, and a server that cannot start (port
taken, bad certificate) is logged while lmaster goes on relaying.

The live stream (``GET /api/stream``) is a :class:`~fructosa.taps.stream.StreamHub`
tap next to the latest values; lmaster's events (agents connected or down,
jobs started or ended, alarms) reach its clients through :meth:`HttpFace.publish_event`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import replace

from aiohttp import web

from ..config.jobs import JobsConfig
from ..config.master import HttpConfig, SlurmConfig
from ..graphite_paths import Datapoint
from ..http import server
from ..http.app import apply_settings, make_app
from ..http.jobs import JobService, add_job_routes
from ..http.keys import SETTINGS
from ..http.metrics import add_metrics_routes
from ..http.scrapes import add_scrapes_routes
from ..http.settings import HttpSettings
from ..http.state import HttpState
from ..http.stream import add_stream_routes
from ..jobs.allocation import AllocationQueries
from ..jobs.tracker import JobTracker
from ..prometheus.exposition import MetricsSettings
from ..prometheus.scrapes import Scrapes
from ..taps import Tap
from ..taps.latest import LatestValues
from ..taps.stream import StreamHub, StreamLimits
from .agents import AgentState, AgentTable
from .nodes import AgentNodes

log = logging.getLogger(__package__)

PRUNE_INTERVAL = 60.0
"""Seconds between two prunes of the latest-values store (series that stopped, hosts gone)."""
NODES_CACHE_SECONDS = 1.0
"""How long an ``/api/nodes`` answer is reused: 50 clients polling every second cost one build."""
STOP_TIMEOUT = 5.0


def http_settings(cfg: HttpConfig) -> HttpSettings:
    return HttpSettings(
        listen=cfg.listen, token=cfg.token, public_read=cfg.public_read, max_connections=cfg.max_connections,
        max_body=cfg.max_body, idle_timeout=cfg.idle_timeout, request_timeout=cfg.request_timeout,
        tls_cert=cfg.tls_cert, tls_key=cfg.tls_key, nodes_cache_seconds=NODES_CACHE_SECONDS,
    )  # fmt: skip


def job_service(jobs: JobsConfig, slurm: SlurmConfig | None, graphite_url: str | None, prefix: str) -> JobService:
    """The job tracker (a tap) and what the job API asks beyond it: Slurm with [slurm], graphite-web with a URL."""
    tracker = JobTracker(jobs.limits(), jobs.thresholds)
    queries = None
    if slurm is not None and slurm.enabled:
        queries = AllocationQueries(squeue=slurm.squeue, sacct=slurm.sacct, timeout=slurm.command_timeout,
                                    slurm_conf=slurm.slurm_conf)  # fmt: skip
    return JobService(tracker, queries, graphite_url, prefix)


def agent_event(state: AgentState, up: bool, now: float) -> dict:
    """A host's liveness change as the live stream shows it; ``node_state`` is the nodes table's state."""
    node_state = "up" if up else "late" if state.connected else "down"
    return {"agent": state.host, "state": "connected" if up else "down", "node_state": node_state, "time": now}


def stream_limits(cfg: HttpConfig) -> StreamLimits:
    return StreamLimits(queue_size=cfg.stream_queue, max_clients=cfg.max_stream_clients, max_patterns=cfg.max_patterns)


class HttpFace:
    """The ``[http]`` server of one lmaster: start, prune, reload, stop."""

    def __init__(
        self,
        cfg: HttpConfig,
        agents: AgentTable,
        jobs: JobsConfig | None = None,
        slurm: SlurmConfig | None = None,
        graphite_prefix: str = "",
    ) -> None:
        self.config = cfg
        self.latest = LatestValues()
        self.app = make_app(http_settings(cfg), HttpState(AgentNodes(agents), self.latest))
        self.runner: web.AppRunner | None = None
        self.addresses: list[str] = []
        self.scrapes: Scrapes | None = None
        self.jobs = None if jobs is None else job_service(jobs, slurm, cfg.graphite_url, graphite_prefix)  # jobs
        if self.jobs is not None:
            add_job_routes(self.app, self.jobs)
        # live stream: GET /api/stream, fed by the flow like the latest values; closed by the runner's cleanup
        self.stream = StreamHub(self.latest, stream_limits(cfg))
        add_stream_routes(self.app, self.stream)
        agents.listeners.append(self._agent_changed)

    @property
    def taps(self) -> list[Tap]:
        """What the flow must feed: the latest-values store the API reads, the live stream, and the job tracker."""
        return [self.latest, self.stream, *([self.jobs.tracker] if self.jobs is not None else [])]

    def publish_event(self, event: dict) -> None:
        """Send ``{"event": event}`` to every live-stream client; nothing is kept when none is connected."""
        self.stream.publish_event(event)

    def _agent_changed(self, state: AgentState, up: bool, now: float) -> None:
        self.stream.publish_event(agent_event(state, up, now))

    # Prometheus: /metrics over the latest values, and the targets lmaster scrapes itself (/api/scrapes)
    def add_prometheus(
        self,
        emit: Callable[[list[Datapoint]], None],
        self_metrics: Callable[[], dict[str, float]],
        spool_dir: str | None,
    ) -> None:
        """Serve ``/metrics`` and ``/api/scrapes`` (call before :meth:`start`).

        ``self_metrics`` returns the last report's copy (sampling lmaster's CPU
        from a handler would shift the report's windows); scraped samples go
        through ``emit``, lmaster's flow, to every sink and tap like its own
        datapoints; the targets are kept in ``scrapes dir``, else ``spool_dir``.
        """
        settings = MetricsSettings(self.config.metrics_staleness, self.config.metrics_max_series)
        add_metrics_routes(self.app, self.latest, settings, self_metrics=self_metrics)
        self.scrapes = Scrapes(emit, self.config.scrapes_dir or spool_dir)
        add_scrapes_routes(self.app, self.scrapes)

    async def start(self) -> None:
        """Serve on every listen address; a failure is logged, and lmaster relays on without HTTP."""
        if self.scrapes is not None:  # Prometheus: the saved targets are scraped even if the server cannot start
            await self.scrapes.start()
            if self.scrapes.state_path is None:
                log.info("no spool dir and no [http] scrapes dir: targets of /api/scrapes will not survive a restart")
        try:
            self.runner, sites = await server.start(self.app)
        except (OSError, ssl.SSLError) as error:
            where = ", ".join(f"{host}:{port}" for host, port in self.config.listen)
            log.error("[http] listen = %s: cannot serve the HTTP API: %s", where, getattr(error, "strerror", error))
            return
        self.addresses = [site.name for site in sites]
        if self.config.token is None:
            log.warning("[http] has no token file: whoever reaches %s can read the API", ", ".join(self.addresses))

    async def run(self) -> None:
        """Prune the latest-values store once every :data:`PRUNE_INTERVAL` seconds, until cancelled."""
        jobs = asyncio.create_task(self.jobs.run(), name="jobs-memory") if self.jobs is not None else None
        try:
            while True:
                await asyncio.sleep(PRUNE_INTERVAL)
                for _ in self.latest.store_held_in_slices():  # not all hosts' held blocks in one stall
                    await asyncio.sleep(0)
                removed = self.latest.prune(time.time())
                if removed:
                    log.debug("latest values: %d series without news pruned", removed)
        finally:
            if jobs is not None:
                jobs.cancel()

    async def stop(self) -> None:
        if self.scrapes is not None:  # Prometheus
            await self.scrapes.stop()
        if self.runner is not None:
            try:
                await asyncio.wait_for(self.runner.cleanup(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("HTTP server did not stop within %g s", STOP_TIMEOUT)
            self.runner = None

    def reconfigure(self, new: HttpConfig | None) -> None:
        """A reload: the token and public read apply at once; the rest waits for a restart (logged)."""
        if new is None:
            log.warning("reload: removing [http] takes effect at the next restart")
            return
        old = self.config
        if replace(old, token_file=None, token=None, public_read=False) != replace(
            new, token_file=None, token=None, public_read=False
        ):
            log.warning("reload: a change of [http] listen, TLS or limits takes effect at the next restart")
        current = self.app[SETTINGS]
        if (current.token, current.public_read) != (new.token, new.public_read):
            apply_settings(self.app, replace(current, token=new.token, public_read=new.public_read))
            shown = "yes" if new.public_read else "no"
            log.info("reload: [http] token and public read applied (public read = %s)", shown)
        self.config = replace(old, token_file=new.token_file, token=new.token, public_read=new.public_read)
