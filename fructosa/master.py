"""lmaster: accepts agents, turns their samples into datapoints, feeds the sinks.

Each agent connection is its own coroutine, so a slow, silent or hostile peer
costs one task and a socket, never other agents' data. Anything a peer sends
is checked before use: the number of connections, frame lengths before the
payload is read, the hello (and with a shared secret its HMAC) before any
sample, pickles through :class:`~fructosa.wire.protocol.PlainDataUnpickler`, and
samples through the bounded flattening walk.

A batch is acknowledged only once every sink holds it safely (written to
carbon, or to the disk spool); a batch id seen before is acknowledged
without being relayed again.

The master also keeps a table of agents (``lmaster status`` shows it from the
status file it rewrites every ``self metrics interval``), sends per-node
liveness (``HOST.fructosa.up``, ``HOST.fructosa.seconds_since_data``) through
its sinks, and its own health to carbon's plaintext port with graphyte
(``fructosa.lmaster.HOST.*``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import graphyte

from . import __version__
from .config import MasterConfig
from .daemon import write_status
from .graphite_paths import Datapoint, SampleError, sample_to_datapoints, short_hostname
from .jobs.events import JobEventsPoller
from .ratelog import RateLimitedLog
from .selfstats import ProcessUsage
from .sinks import Sink
from .sinks.carbon import CarbonPickleSink
from .sinks.cluster import CarbonClusterSink
from .sinks.ring import ConsistentHashRing
from .sinks.upstream import UpstreamSink
from .spool import Spool
from .wire import auth, protocol
from .wire.blocks import Block, BlockError, all_valid, filter_valid
from .wire.session import IdleTimeout, read_frame

log = logging.getLogger(__name__)

SINK_CLOSE_TIMEOUT = 10.0
REMEMBERED_BATCHES = 1 << 18
"""Batch ids kept for duplicate detection (resends come within seconds to
minutes; this covers hours of a large cluster)."""

_DONE = None  # state of a remembered batch that every sink holds safely

MAX_KNOWN_AGENTS = 100_000
"""Agent table size; beyond it the longest-silent agent is forgotten."""

DECODE_INLINE_BYTES = 64 * 1024
"""Sample batches up to this size decode on the event loop; larger ones in a
thread, as do datapoint blocks that need checking one datapoint at a time."""


@dataclass
class MasterCounters:
    connections: int = 0
    rejected: int = 0
    frames: int = 0
    duplicates: int = 0
    samples: int = 0
    bad_samples: int = 0
    datapoints: int = 0
    bad_datapoints: int = 0


@dataclass
class AgentState:
    """What the master knows of one agent (by host name), for status and liveness."""

    host: str
    address: str = ""
    agent: str = ""
    connected: bool = False
    connected_since: float = 0.0
    last_frame: float = 0.0
    last_data: float = 0.0
    samples: int = 0
    samples_per_second: float = 0.0
    backlog: int = 0
    heartbeat_interval: float = 30.0
    _samples_at_last_report: int = 0

    def up(self, now: float) -> bool:
        """Connected and heard from within two heartbeats (plus slack)."""
        return self.connected and now - self.last_frame <= 2 * self.heartbeat_interval + 5


@dataclass(frozen=True)
class Limits:
    peer_timeout: float = 10.0
    """Seconds for the TLS handshake and hello, and for a started frame to complete."""
    idle_timeout: float = 120.0
    """Seconds an agent may send nothing at all (it sends heartbeats when quiet)."""
    max_connections: int = 4096

    @classmethod
    def of(cls, cfg: MasterConfig) -> Limits:
        return cls(cfg.peer_timeout, cfg.idle_timeout, cfg.max_connections)


def carbon_sink(cfg: MasterConfig, spool: Spool | None) -> Sink:
    """One carbon, or a carbon cluster hashed like carbon's consistent-hashing relay."""
    graphite = cfg.graphite
    if len(graphite.destinations) > 1 or graphite.replication_factor > 1:
        ring = ConsistentHashRing(graphite.destinations, graphite.replication_factor, graphite.diverse_replicas)
        return CarbonClusterSink(
            ring, graphite.prefix, graphite.max_queued_datapoints, spool, graphite.resend_window
        )  # fmt: skip
    (destination,) = graphite.destinations
    return CarbonPickleSink(
        destination.host, destination.port, graphite.prefix, graphite.max_queued_datapoints, spool,
        graphite.resend_window,
    )  # fmt: skip


def upstream_sink(cfg: MasterConfig) -> UpstreamSink:
    """The sink to the lmaster this one relays to (``[upstream]``)."""
    upstream = cfg.upstream
    assert upstream is not None
    link = upstream.link
    tls = auth.client_context_for(link)
    return UpstreamSink(upstream.host, upstream.port, short_hostname(socket.gethostname()), link.secret, tls)


class Master:
    def __init__(
        self,
        cfg: MasterConfig,
        listen_sockets: list[socket.socket],
        spool: Spool | None = None,
        tls: ssl.SSLContext | None = None,
        status_file: str | None = None,
        sinks: list[Sink] | None = None,
    ) -> None:
        self.config = cfg
        self.listen_sockets = listen_sockets
        self.limits = Limits.of(cfg)
        self.secret = cfg.link.secret
        self.tls = tls
        self.status_file = status_file
        self.spool = spool
        if sinks is None:
            sinks = [carbon_sink(cfg, spool)] if cfg.graphite.enabled else []
            if cfg.upstream is not None:
                sinks.append(upstream_sink(cfg))
        self.sinks = sinks
        self.counters = MasterCounters()
        self.agents: dict[str, AgentState] = {}
        self.started = time.time()
        self._usage = ProcessUsage()
        self._self_metrics: graphyte.Sender | None = None
        self._peer_log = RateLimitedLog(log, period=300.0)
        self._connections: set[asyncio.Task] = set()
        self._sink_tasks: list[asyncio.Task] = []
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decoder")
        # batch id → list of acknowledgement callbacks while pending, _DONE once safe
        self._batches: OrderedDict[bytes, list[Callable[[bytes], None]] | None] = OrderedDict()
        self._load_known_agents()

    async def run(self, stop: asyncio.Event) -> None:
        if self.secret is None:
            log.warning("no secret file configured: any host that reaches the port can send data")
        if not self.sinks:
            log.warning(
                "no sink enabled ([Graphite] enabled = no): samples are accepted and acknowledged but kept nowhere"
            )
        self._sink_tasks = [asyncio.create_task(sink.run(), name=f"sink-{sink.name}") for sink in self.sinks]
        servers = [
            await asyncio.start_server(
                self._accept,
                sock=sock,
                limit=protocol.MAX_FRAME + 64,
                ssl=self.tls,
                ssl_handshake_timeout=self.limits.peer_timeout if self.tls else None,
            )  # fmt: skip
            for sock in self.listen_sockets
        ]
        for sock in self.listen_sockets:
            address = sock.getsockname()
            log.info(
                "lmaster %s listening on %s port %d for agents%s%s",
                __version__, address[0], address[1], " (TLS)" if self.tls else "",
                ", shared secret required" if self.secret else "",
            )  # fmt: skip
        self._start_self_metrics()
        reporter = asyncio.create_task(self._report_forever(), name="reporter")
        slurm_poller = None
        if self.config.slurm.enabled:  # job events and counts ([slurm]); ends when stop is set
            poller = JobEventsPoller(self.config.slurm, self.emit)
            slurm_poller = asyncio.create_task(poller.run(stop), name="slurm-poller")
        try:
            await stop.wait()
        finally:
            log.info("shutting down: closing %d agent connections", len(self._connections))
            reporter.cancel()
            for server in servers:
                server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(reporter, *self._connections, return_exceptions=True)
            if slurm_poller is not None:
                slurm_poller.cancel()
                await asyncio.gather(slurm_poller, return_exceptions=True)
            self._report(time.time())  # last liveness and status: every agent is now disconnected
            for sink in self.sinks:
                await sink.close(SINK_CLOSE_TIMEOUT)
            for task in self._sink_tasks:
                task.cancel()
            await asyncio.gather(*self._sink_tasks, return_exceptions=True)
            if self._self_metrics is not None:
                self._self_metrics.stop()
            log.info("lmaster stopped: %s", self.summary())

    # -- reload ----------------------------------------------------------------

    def reload(self, new: MasterConfig) -> None:
        """Apply a new configuration; agent connections stay up."""
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
        ):  # fmt: skip
            if before != after:
                log.warning("reload: a change of %s takes effect at the next restart", what)
        self.limits = Limits.of(new)
        if new.link.secret != self.secret:
            log.info("reload: new shared secret; connected agents stay, new connections need it")
            self.secret = new.link.secret
        graphite = new.graphite
        for sink in self.sinks:
            if isinstance(sink, CarbonPickleSink) and len(graphite.destinations) == 1:
                destination = graphite.destinations[0]
                sink.retarget(destination.host, destination.port, graphite.prefix, graphite.resend_window)
            elif isinstance(sink, CarbonClusterSink) and graphite.destinations != old.graphite.destinations:
                log.warning("reload: a change of [Graphite] destinations takes effect at the next restart")
        self.config = new
        if self._self_metrics is not None:
            self._self_metrics.stop()
            self._self_metrics = None
        self._start_self_metrics()

    # -- status, liveness and self-metrics -----------------------------------

    def _start_self_metrics(self) -> None:
        if not self.config.self_metrics or not self.config.graphite.enabled:
            return
        graphite = self.config.graphite
        prefix = ".".join(
            part for part in (graphite.prefix, "fructosa", "lmaster", short_hostname(socket.gethostname())) if part
        )
        self._self_metrics = graphyte.Sender(
            graphite.host, graphite.plaintext_port, prefix=prefix, interval=1, queue_size=10_000, timeout=5
        )

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.self_metrics_interval)
            self._report(time.time())

    def _report(self, now: float) -> None:
        """Liveness, self-metrics and the status file; a failure here is logged,
        never allowed to stop the relaying."""
        try:
            self._report_unguarded(now)
        except Exception as error:
            self._peer_log.log(logging.ERROR, "report", "self-report failed: %s: %s", type(error).__name__, error)

    def _report_unguarded(self, now: float) -> None:
        interval = self.config.self_metrics_interval
        for state in self.agents.values():
            state.samples_per_second = (state.samples - state._samples_at_last_report) / interval
            state._samples_at_last_report = state.samples
        datapoints: list[Datapoint] = []
        for state in self.agents.values():
            path = f"{short_hostname(state.host)}.fructosa"
            datapoints.append((f"{path}.up", (now, 1.0 if state.up(now) else 0.0)))
            if state.last_data:
                datapoints.append((f"{path}.seconds_since_data", (now, round(now - state.last_data, 1))))
        self.emit(datapoints)
        self._send_self_metrics(now)
        if self.status_file:
            try:
                write_status(self.status_file, self._status(now))
            except OSError as error:
                self._peer_log.log(
                    logging.WARNING, "status", "cannot write status file %s: %s", self.status_file, error
                )

    def emit(self, datapoints: list[Datapoint]) -> None:
        """Send datapoints the master makes itself (liveness, job events) to every sink."""
        if not datapoints:
            return
        block = Block.of(datapoints)
        for sink in self.sinks:
            sink.submit(block)

    def _send_self_metrics(self, now: float) -> None:
        if self._self_metrics is None:
            return
        usage = self._usage.sample()
        metrics = {
            "agents_connected": sum(state.connected for state in self.agents.values()),
            "samples_in_per_second": sum(state.samples_per_second for state in self.agents.values()),
            "connections_rejected": self.counters.rejected,
            "batches_duplicate": self.counters.duplicates,
            "samples_malformed": self.counters.bad_samples,
            "datapoints_in": self.counters.datapoints,
            "datapoints_refused": self.counters.bad_datapoints,
            "cpu_percent": usage["cpu_percent"],
            "rss_bytes": usage["rss_bytes"],
        }
        for sink in self.sinks:
            metrics.update({f"{sink.name}.{key}": value for key, value in sink.stats().items()})
        if self.spool is not None:
            metrics["spool_bytes"] = self.spool.bytes
        for key, value in metrics.items():
            self._self_metrics.send(key, value, now)

    def _status(self, now: float) -> dict:
        rows = [
            {
                "host": state.host,
                "address": state.address,
                "agent": state.agent,
                "up": state.up(now),
                "connected_since": state.connected_since,
                "last_data": state.last_data,
                "samples_per_second": round(state.samples_per_second, 2),
                "backlog": state.backlog,
            }  # fmt: skip
            for state in sorted(self.agents.values(), key=lambda state: state.host)
        ]
        sinks = {sink.name: sink.stats() for sink in self.sinks}
        return {"agents": rows, "sinks": sinks, "report": self._status_report(rows, sinks, now)}

    def _status_report(self, rows: list[dict], sinks: dict, now: float) -> str:
        def ago(when: float) -> str:
            return "never" if not when else f"{now - when:.0f} s ago"

        lines = [
            f"up since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}; {self.summary()}",
            f"{len(rows)} agents ({sum(row['up'] for row in rows)} up):",
            f"  {'host':<20} {'up':<4} {'address':<22} {'agent':<18} {'connected':<12} {'last data':<12} "
            f"{'samples/s':>9} {'backlog':>8}",
        ]
        for row in rows:
            lines.append(
                f"  {row['host']:<20} {'yes' if row['up'] else 'NO':<4} {row['address']:<22} {row['agent']:<18} "
                f"{ago(row['connected_since']) if row['up'] else '-':<12} {ago(row['last_data']):<12} "
                f"{row['samples_per_second']:>9.2f} {row['backlog']:>8}"
            )
        return "\n".join(lines)

    def _load_known_agents(self) -> None:
        """Hosts the previous run knew, so a node that died while lmaster was
        down still shows up = 0 instead of simply vanishing."""
        if not self.status_file:
            return
        try:
            with open(self.status_file, encoding="utf-8") as stream:
                previous = json.load(stream)
            for row in previous.get("agents", []):
                host = row.get("host")
                if isinstance(host, str) and host:
                    self.agents[host] = AgentState(host=host, last_data=float(row.get("last_data") or 0))
        except (OSError, ValueError, TypeError, AttributeError):
            return

    def summary(self) -> str:
        c = self.counters
        sinks = ", ".join(f"{sink.name} {sink.stats()}" for sink in self.sinks)
        return (
            f"{c.connections} connections ({c.rejected} rejected), {c.frames} batches "
            f"({c.duplicates} duplicates), {c.samples} samples ({c.bad_samples} malformed), "
            f"{c.datapoints} datapoints ({c.bad_datapoints} refused); {sinks}"
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername") or ("?", 0)
        address = f"{peer[0]}:{peer[1]}"
        self.counters.connections += 1
        if len(self._connections) >= self.limits.max_connections:
            self._reject(
                peer[0], address, "limit", f"too many connections (max connections = {self.limits.max_connections})"
            )
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve_agent(reader, writer, address)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError) as error:
            log.info("connection %s lost: %s", address, error)
        except Exception:  # a bug: this connection ends, the master and other agents go on
            log.exception("connection %s closed after an unexpected error", address)
        finally:
            self._connections.discard(task)
            writer.close()

    def _reject(self, peer_ip: str, address: str, category: str, reason: str) -> None:
        """Disconnect with a log line, once per peer address and kind of problem."""
        self.counters.rejected += 1
        self._peer_log.log(logging.WARNING, (peer_ip, category), "disconnected %s: %s", address, reason)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict:
        """The agent's verified hello, after our challenge; raises ProtocolError."""
        nonce = auth.new_nonce()
        challenge = {
            "protocol": protocol.PROTOCOL_NAME, "version": protocol.PROTOCOL_VERSION,
            "nonce": nonce, "auth": self.secret is not None,
        }  # fmt: skip
        writer.write(protocol.encode_json(protocol.CHALLENGE, challenge))
        kind, payload = await read_frame(reader, self.limits.peer_timeout)
        if kind != protocol.HELLO:
            raise protocol.ProtocolError(f"first frame is {kind!r}, not a hello")
        hello = protocol.check_hello(payload)
        if hello.get("relay") is True and not self.config.accept_relays:
            writer.write(protocol.encode_json(protocol.WELCOME, {"error": "relays not accepted here"}))
            raise protocol.ProtocolError(
                f"lmaster {hello['host']!r} wants to relay, but relays are not accepted here "
                "(set [lmaster] accept relays = yes)"
            )
        welcome = {"protocol": protocol.PROTOCOL_NAME, "version": protocol.PROTOCOL_VERSION}
        if self.secret is not None:
            if "mac" not in hello:
                raise AuthenticationError(
                    f"agent {hello['host']!r} sent no secret proof (no secret file on the agent?)"
                )
            expected = auth.agent_mac(self.secret, nonce, str(hello.get("nonce", "")), hello["host"])
            if not auth.macs_equal(expected, hello["mac"]):
                raise AuthenticationError(f"agent {hello['host']!r} does not know the shared secret")
            welcome["mac"] = auth.master_mac(self.secret, str(hello.get("nonce", "")), nonce)
        welcome["master"] = f"lmaster {__version__}"
        writer.write(protocol.encode_json(protocol.WELCOME, welcome))
        return hello

    async def _serve_agent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str) -> None:
        peer_ip = address.rsplit(":", 1)[0]
        try:
            hello = await asyncio.wait_for(self._handshake(reader, writer), self.limits.peer_timeout)
        except asyncio.TimeoutError:
            self._reject(peer_ip, address, "timeout", f"no hello within {self.limits.peer_timeout:g} s")
            return
        except asyncio.IncompleteReadError as error:
            if error.partial:
                self._reject(peer_ip, address, "protocol", "closed in the middle of its hello")
            else:  # a port probe or health check, not an agent
                log.debug("%s closed the connection without a hello", address)
            return
        except AuthenticationError as error:
            writer.write(protocol.encode_json(protocol.WELCOME, {"error": "authentication failed"}))
            self._reject(peer_ip, address, "auth", f"authentication failed: {error}")
            return
        except protocol.ProtocolError as error:
            self._reject(peer_ip, address, "protocol", f"bad hello: {error}")
            return
        agent = f"{hello['host']} ({address}, {hello.get('agent', 'unknown agent')})"
        log.info("agent %s connected", agent)
        # The table entry is made on the first frame after the hello, so a peer
        # that only says hello (or garbage after it) leaves no trace in it.
        state = AgentState(host=hello["host"], address=address, agent=str(hello.get("agent", "")), connected=True)
        state.connected_since = state.last_frame = time.time()
        heartbeat = hello.get("heartbeat")
        if isinstance(heartbeat, (int, float)) and 0 < heartbeat < 86400:
            state.heartbeat_interval = float(heartbeat)
        acks = AckWriter(writer)
        host_prefix: str | None = short_hostname(hello["host"])
        if hello.get("relay") is True:  # accepted in _handshake only when relays are allowed
            host_prefix = None
        try:
            while True:
                kind, payload = await read_frame(reader, self.limits.peer_timeout, self.limits.idle_timeout)
                state.last_frame = time.time()
                if self.agents.get(state.host) is not state:
                    state = self._register(state)
                if kind == protocol.DATAPOINTS or kind == protocol.SAMPLES:
                    state.samples += await self._take_batch(kind, payload, acks, peer_ip, address, host_prefix)
                    state.last_data = state.last_frame
                elif kind == protocol.HEARTBEAT:
                    state.backlog = heartbeat_backlog(payload, state.backlog)
                else:
                    raise protocol.ProtocolError(f"unexpected frame kind {kind!r}")
        except asyncio.IncompleteReadError as error:
            if error.partial:
                self._peer_log.log(
                    logging.WARNING, (peer_ip, "truncated"), "agent %s disconnected in the middle of a frame", agent
                )
            else:
                log.info("agent %s disconnected", agent)
        except ConnectionError as error:
            log.info("agent %s connection lost: %s", agent, error)
        except IdleTimeout:
            self._reject(peer_ip, address, "idle", f"agent {hello['host']} silent for {self.limits.idle_timeout:g} s")
        except asyncio.TimeoutError:
            self._reject(peer_ip, address, "timeout", f"frame incomplete after {self.limits.peer_timeout:g} s")
        except protocol.ProtocolError as error:
            self._reject(peer_ip, address, "protocol", f"agent {hello['host']}: {error}")
        finally:
            acks.closed = True
            if state.address == address:  # not already replaced by a newer connection
                state.connected = False

    def _register(self, state: AgentState) -> AgentState:
        """Put a (re)connected agent in the table, keeping what is known of it."""
        known = self.agents.get(state.host)
        if known is not None:
            known.address, known.agent, known.connected = state.address, state.agent, True
            known.connected_since, known.last_frame = state.connected_since, state.last_frame
            known.heartbeat_interval = state.heartbeat_interval
            return known
        if len(self.agents) >= MAX_KNOWN_AGENTS:  # forget the longest-silent one
            silent = min(self.agents.values(), key=lambda other: (other.connected, other.last_frame))
            del self.agents[silent.host]
        self.agents[state.host] = state
        return state

    async def _take_batch(
        self, kind: bytes, payload: bytes, acks: AckWriter, peer_ip: str, address: str, host_prefix: str | None
    ) -> int:
        """Relay one batch (or acknowledge a duplicate); the number of new samples.

        Datapoints must lie below ``host_prefix`` (the agent's own host), unless it is None.
        """
        batch_id, body = protocol.split_batch(payload)
        self.counters.frames += 1
        if batch_id in self._batches:
            self.counters.duplicates += 1
            waiters = self._batches[batch_id]
            if waiters is _DONE:
                acks.send(batch_id)
            else:
                waiters.append(acks.send)
            return 0
        waiters: list[Callable[[bytes], None]] = [acks.send]
        self._batches[batch_id] = waiters
        if len(self._batches) > REMEMBERED_BATCHES:
            self._batches.popitem(last=False)
        try:
            block = await self._checked_block(kind, body, host_prefix, peer_ip, address)
        except protocol.ProtocolError:
            self._batches.pop(batch_id, None)
            raise
        samples = block.samples
        self.counters.samples += samples
        self.counters.datapoints += len(block)
        pending = [len(self.sinks)]

        def one_sink_safe() -> None:
            pending[0] -= 1
            if pending[0] <= 0:
                if batch_id in self._batches:
                    self._batches[batch_id] = _DONE
                for waiter in waiters:
                    waiter(batch_id)

        if not self.sinks:
            one_sink_safe()
        for sink in self.sinks:
            sink.submit(block, one_sink_safe)
        return samples

    async def _checked_block(
        self, kind: bytes, body: bytes, host_prefix: str | None, peer_ip: str, address: str
    ) -> Block:
        """The valid datapoints of one batch; what is refused is counted and logged.

        Slow work (unpickling large sample batches, checking a block that failed
        the whole-block check datapoint by datapoint) runs in a worker thread, so
        a hostile 1 MiB frame cannot hold up the other agents.
        """
        loop = asyncio.get_running_loop()
        refusals: list[str] = []
        if kind == protocol.DATAPOINTS:
            try:
                block = Block.decode(body)
            except BlockError as error:
                raise protocol.ProtocolError(f"undecodable datapoints: {error}") from None
        else:
            if len(body) > DECODE_INLINE_BYTES:
                samples, datapoints, errors = await loop.run_in_executor(self._decoder, decode_batch, body)
            else:
                samples, datapoints, errors = decode_batch(body)
            self.counters.bad_samples += len(errors)
            refusals = [str(error) for error in errors]
            block = Block.of(datapoints, samples)
        if not all_valid(block, host_prefix):
            block, wrong = await loop.run_in_executor(self._decoder, filter_valid, block, host_prefix)
            self.counters.bad_datapoints += len(wrong)
            refusals += wrong
        if refusals:
            self._peer_log.log(
                logging.WARNING, ("refused", peer_ip), "malformed sample from %s skipped: %s (%d in this batch)",
                address, refusals[0], len(refusals),
            )  # fmt: skip
        return block


def decode_batch(pickled: bytes) -> tuple[int, list[Datapoint], list[SampleError]]:
    """(samples, datapoints, refusals) of one batch; ProtocolError if undecodable."""
    samples = protocol.decode_samples(pickled)
    datapoints: list[Datapoint] = []
    errors: list[SampleError] = []
    for sample in samples:
        try:
            sample_to_datapoints(sample, out=datapoints)
        except SampleError as error:
            errors.append(error)
    return len(samples), datapoints, errors


def heartbeat_backlog(payload: bytes, previous: int) -> int:
    """The agent's backlog (queued samples + spooled batches) from its heartbeat.

    Only informative: a heartbeat whose payload makes no sense still proves the
    agent alive, so it keeps the previous figure rather than ending the session.
    """
    if not payload:
        return previous
    try:
        message = json.loads(payload)
        backlog = int(message.get("queued", 0)) + int(message.get("spooled", 0))
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError):
        return previous
    return backlog if backlog >= 0 else previous


class AuthenticationError(protocol.ProtocolError):
    """The peer does not prove it knows the shared secret."""


class AckWriter:
    """Coalesces the acknowledgements of one connection into few ``A`` frames."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.closed = False
        self._pending: list[bytes] = []

    def send(self, batch_id: bytes) -> None:
        if self.closed:
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(batch_id)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if self.closed or self.writer.is_closing():
            return
        per_frame = protocol.MAX_FRAME // protocol.BATCH_ID_SIZE - 1
        for start in range(0, len(pending), per_frame):
            self.writer.write(protocol.encode_acks(pending[start : start + per_frame]))
