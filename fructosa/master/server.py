"""lmaster's listening side: accepting agents, connection limits, the frame loop.

Each agent connection is its own coroutine, so a slow, silent or hostile peer
costs one task and a socket, never other agents' data. Anything a peer sends
is checked before use: the number of connections, opening and authenticated
apart (:mod:`fructosa.master.slots`), frame lengths before the payload is
read (:func:`read_agent_frame`, with one deadline per connection kept by
:mod:`fructosa.master.deadlines`; a hello is at most 4 KiB),
the hello (and with a shared secret its HMAC,
:func:`~fructosa.wire.session.accept_session`) before any batch, then each
batch by the flow (:mod:`fructosa.master.flow`). A peer breaking the rules is
disconnected with one log line per address and kind of problem.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import __version__
from ..graphite_paths import short_hostname
from ..ratelog import RateLimitedLog
from ..wire import protocol
from ..wire.session import AckFlusher, AckWriter, AuthenticationError, IdleTimeout, SessionRefused, accept_session
from .agents import AgentLink, AgentState, AgentTable
from .deadlines import DeadlineWatch, ReadDeadline
from .flow import Flow, Sender
from .slots import ConnectionSlots

if TYPE_CHECKING:
    from ..config import MasterConfig

log = logging.getLogger(__package__)  # one logger for all of lmaster, as admins filter on it


@dataclass(frozen=True)
class Limits:
    peer_timeout: float = 10.0
    """Seconds for the TLS handshake and hello, and for a started frame to complete."""
    idle_timeout: float = 120.0
    """Seconds an agent may send nothing at all (it sends heartbeats when quiet)."""
    max_connections: int = 4096
    """Authenticated connections."""
    max_unauthenticated: int = 256
    """Connections that have not completed their hello; past it the oldest is dropped."""

    @classmethod
    def of(cls, cfg: MasterConfig) -> Limits:
        return cls(cfg.peer_timeout, cfg.idle_timeout, cfg.max_connections, cfg.max_unauthenticated)


@dataclass
class ServerCounters:
    connections: int = 0
    rejected: int = 0


class AgentServer:
    """Serves agent (and relay) connections on the listening sockets; see the module docstring."""

    def __init__(
        self,
        cfg: MasterConfig,
        listen_sockets: list[socket.socket],
        flow: Flow,
        agents: AgentTable,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.listen_sockets = listen_sockets
        self.flow = flow
        self.agents = agents
        self.tls = tls
        self.limits = Limits.of(cfg)
        self.secret = cfg.link.secret
        self.accept_relays = cfg.accept_relays
        self.counters = ServerCounters()
        self._peer_log = RateLimitedLog(log, period=300.0)
        self._connections: set[asyncio.Task] = set()
        self.slots = ConnectionSlots()
        self._servers: list[asyncio.Server] = []
        self.deadlines = DeadlineWatch(lambda: min(self.limits.peer_timeout, self.limits.idle_timeout))
        self._acks = AckFlusher()

    @property
    def connections(self) -> int:
        return len(self._connections)

    def reconfigure(self, cfg: MasterConfig) -> None:
        """Reload: new limits apply at once; a new shared secret or relay permission to new
        connections (connected agents stay)."""
        self.limits = Limits.of(cfg)
        self.accept_relays = cfg.accept_relays
        if cfg.link.secret != self.secret:
            log.info("reload: new shared secret; connected agents stay, new connections need it")
            self.secret = cfg.link.secret

    async def start(self) -> None:
        """Listen on every socket (TLS handshakes must finish within the peer timeout)."""
        self._servers = [
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

    async def stop(self) -> None:
        """Stop listening and end every connection."""
        for server in self._servers:
            server.close()
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        self.deadlines.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername") or ("?", 0)
        ip, address = str(peer[0]), f"{peer[0]}:{peer[1]}"
        self.counters.connections += 1
        if self.slots.authenticated >= self.limits.max_connections:
            self._reject(ip, address, "limit", self._too_many())
            writer.close()
            return
        self._connections.add(task)
        for dropped in self.slots.arrive(task, ip, address, self.limits.max_unauthenticated):
            self._reject(
                dropped.ip, dropped.address, "crowded",
                f"dropped before its hello: over {self.limits.max_unauthenticated} connections without one"
                " (max unauthenticated), this the oldest of the address holding the most",
            )  # fmt: skip
            dropped.task.cancel()
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
            self.slots.leave(task, ip)
            writer.close()

    def _too_many(self) -> str:
        return f"too many connections (max connections = {self.limits.max_connections})"

    def _admit(self, task: asyncio.Task, ip: str, hello: dict) -> str | None:
        """Called with a verified hello just before the welcome: None when the connection
        takes an authenticated slot, else why not."""
        return None if self.slots.authenticate(task, ip, self.limits.max_connections) else self._too_many()

    def _reject(self, peer_ip: str, address: str, category: str, reason: str) -> None:
        """Disconnect with a log line, once per peer address and kind of problem."""
        self.counters.rejected += 1
        self._peer_log.log(logging.WARNING, (peer_ip, category), "disconnected %s: %s", address, reason)

    async def _opening(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str) -> dict | None:
        """The peer's verified hello, or None (logged) when it does not get that far."""
        peer_ip = address.rsplit(":", 1)[0]
        timeout = self.limits.peer_timeout
        task = asyncio.current_task()
        assert task is not None
        try:  # accept_session keeps the deadline itself: a wait_for task around it could end unobserved
            return await accept_session(
                reader, writer, self.secret, accept_relays=self.accept_relays, timeout=timeout,
                server=f"lmaster {__version__}", admit=lambda hello: self._admit(task, peer_ip, hello),
            )  # fmt: skip
        except asyncio.TimeoutError:
            self._reject(peer_ip, address, "timeout", f"no hello within {timeout:g} s")
        except asyncio.IncompleteReadError as error:
            if error.partial:
                self._reject(peer_ip, address, "protocol", "closed in the middle of its hello")
            else:  # a port probe or health check, not an agent
                log.debug("%s closed the connection without a hello", address)
        except (ConnectionError, OSError) as error:  # reset mid-hello: as rate-limited as any other failure
            self._reject(peer_ip, address, "lost", f"connection lost during its hello: {error}")
        except AuthenticationError as error:
            self._reject(peer_ip, address, "auth", f"authentication failed: {error}")
        except SessionRefused as error:
            self._reject(peer_ip, address, "limit", str(error))
        except protocol.ProtocolError as error:
            self._reject(peer_ip, address, "protocol", f"bad hello: {error}")
        return None

    async def _serve_agent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str) -> None:
        hello = await self._opening(reader, writer, address)
        if hello is None:
            return
        peer_ip = address.rsplit(":", 1)[0]
        agent = f"{hello['host']} ({address}, {hello.get('agent', 'unknown agent')})"
        log.info("agent %s connected", agent)
        # The table entry is made on the first frame after the hello, so a peer
        # that only says hello (or garbage after it) leaves no trace in it; it
        # counts this connection (link) among the host's live ones until it ends.
        link = AgentLink(address=address, agent=str(hello.get("agent", "")), connected_since=time.time())
        link.facts = hello.get("facts", {})
        heartbeat = hello.get("heartbeat")
        if isinstance(heartbeat, (int, float)) and 0 < heartbeat < 86400:
            link.heartbeat_interval = float(heartbeat)
        state: AgentState | None = None
        acks = AckWriter(writer, self._acks)
        relay = hello.get("relay") is True  # accept_session lets a relay through only when relays are allowed
        sender = Sender(hello["host"], address, None if relay else short_hostname(hello["host"]))
        deadline = self.deadlines.watch(reader)
        admission, take_batch = self.flow.admission, self.flow.take_batch
        try:
            while True:
                kind, payload = await read_agent_frame(reader, deadline, self.limits)
                state = self.agents.heard(hello["host"], link, state, time.time())
                if kind == protocol.DATAPOINTS or kind == protocol.SAMPLES:
                    link.held = True  # while back-pressure holds it, the agent still counts as up
                    try:
                        if admission.take_turn_now():  # the sinks have room and nobody waits: no queue
                            try:
                                state.samples += await take_batch(kind, payload, acks.send, sender)
                            finally:
                                admission.end_turn()
                        else:
                            async with admission.turn():  # waits while the sinks are nearly full
                                state.samples += await take_batch(kind, payload, acks.send, sender)
                    finally:
                        link.held = False
                    state.last_data = state.last_frame
                elif kind == protocol.HEARTBEAT:
                    state.backlog = heartbeat_backlog(payload, state.backlog)
                    news = protocol.heartbeat_facts(payload)
                    if news:
                        state.facts = {**state.facts, **news}
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
            self.deadlines.forget(deadline)
            if state is not None:  # the host stays up while another of its connections is live
                self.agents.detach(state, link, time.time())


async def read_agent_frame(reader: asyncio.StreamReader, deadline: ReadDeadline, limits: Limits) -> tuple[bytes, bytes]:
    """(kind, payload) of an agent's next frame, within the limits.

    The agent may stay silent between frames for ``limits.idle_timeout``
    (IdleTimeout after); once the frame's first byte is in, the rest must
    follow within ``limits.peer_timeout`` (asyncio.TimeoutError). The
    deadline's watch raises them (:mod:`fructosa.master.deadlines`); a read
    of data already buffered costs no timer at all. The length is checked
    before a byte of the payload is read, the kind once it is in.
    """
    loop_time = asyncio.get_running_loop().time
    deadline.error = IdleTimeout
    deadline.at = loop_time() + limits.idle_timeout
    first = await reader.readexactly(1)
    deadline.error = asyncio.TimeoutError
    deadline.at = loop_time() + limits.peer_timeout
    header = first + await reader.readexactly(protocol.HEADER_SIZE - 1)
    body = await reader.readexactly(protocol.frame_length(header))
    deadline.at = math.inf
    return protocol.split_frame(body)


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
