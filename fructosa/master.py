"""lmaster: accepts agents, turns their samples into datapoints, feeds the sinks.

Each agent connection is its own coroutine, so a slow, silent or hostile peer
costs one task and a socket, never other agents' data. Anything a peer sends
is checked before use: the number of connections, frame lengths before the
payload is read, the hello (and with a shared secret its HMAC) before any
sample, pickles through :class:`~fructosa.protocol.PlainDataUnpickler`, and
samples through the bounded flattening walk.

A batch is acknowledged only once every sink holds it safely (written to
carbon, or to the disk spool); a batch id seen before is acknowledged
without being relayed again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from . import __version__, auth, protocol
from .graphite_paths import Datapoint, SampleError, sample_to_datapoints
from .logs import RateLimitedLog
from .sinks import Sink

log = logging.getLogger(__name__)

SINK_CLOSE_TIMEOUT = 10.0
REMEMBERED_BATCHES = 1 << 18
"""Batch ids kept for duplicate detection (resends come within seconds to
minutes; this covers hours of a large cluster)."""

_DONE = None  # state of a remembered batch that every sink holds safely


@dataclass
class MasterCounters:
    connections: int = 0
    rejected: int = 0
    frames: int = 0
    duplicates: int = 0
    samples: int = 0
    bad_samples: int = 0
    datapoints: int = 0
    agents: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    peer_timeout: float = 10.0
    """Seconds for the TLS handshake and hello, and for a started frame to complete."""
    idle_timeout: float = 120.0
    """Seconds an agent may send nothing at all (it sends heartbeats when quiet)."""
    max_connections: int = 4096


class Master:
    def __init__(
        self,
        sinks: list[Sink],
        listen_sockets: list[socket.socket],
        limits: Limits = Limits(),
        secret: bytes | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sinks = sinks
        self.listen_sockets = listen_sockets
        self.limits = limits
        self.secret = secret
        self.tls = tls
        self.counters = MasterCounters()
        self._peer_log = RateLimitedLog(log, period=300.0)
        self._connections: set[asyncio.Task] = set()
        # batch id → list of acknowledgement callbacks while pending, _DONE once safe
        self._batches: OrderedDict[bytes, list[Callable[[bytes], None]] | None] = OrderedDict()

    async def run(self, stop: asyncio.Event) -> None:
        if self.secret is None:
            log.warning("no secret file configured: any host that reaches the port can send data")
        sink_tasks = [asyncio.create_task(sink.run(), name=f"sink-{sink.name}") for sink in self.sinks]
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
        try:
            await stop.wait()
        finally:
            log.info("shutting down: closing %d agent connections", len(self._connections))
            for server in servers:
                server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            for sink in self.sinks:
                await sink.close(SINK_CLOSE_TIMEOUT)
            for task in sink_tasks:
                task.cancel()
            await asyncio.gather(*sink_tasks, return_exceptions=True)
            log.info("lmaster stopped: %s", self.summary())

    def summary(self) -> str:
        c = self.counters
        sinks = ", ".join(f"{sink.name} {sink.stats()}" for sink in self.sinks)
        return (
            f"{c.connections} connections ({c.rejected} rejected), {c.frames} batches "
            f"({c.duplicates} duplicates), {c.samples} samples ({c.bad_samples} malformed), "
            f"{c.datapoints} datapoints; {sinks}"
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
        self.counters.agents[address] = hello["host"]
        acks = AckWriter(writer)
        try:
            while True:
                kind, payload = await read_frame(reader, self.limits.peer_timeout, self.limits.idle_timeout)
                if kind == protocol.SAMPLES:
                    self._take_batch(payload, acks, peer_ip, address)
                elif kind != protocol.HEARTBEAT:
                    raise protocol.ProtocolError(f"unexpected frame kind {kind!r}")
        except asyncio.IncompleteReadError as error:
            if error.partial:
                log.warning("agent %s disconnected in the middle of a frame", agent)
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
            self.counters.agents.pop(address, None)

    def _take_batch(self, payload: bytes, acks: AckWriter, peer_ip: str, address: str) -> None:
        batch_id, pickled = protocol.split_batch(payload)
        self.counters.frames += 1
        if batch_id in self._batches:
            self.counters.duplicates += 1
            waiters = self._batches[batch_id]
            if waiters is _DONE:
                acks.send(batch_id)
            else:
                waiters.append(acks.send)
            return
        samples = protocol.decode_samples(pickled)
        datapoints: list[Datapoint] = []
        for sample in samples:
            try:
                sample_to_datapoints(sample, out=datapoints)
            except SampleError as error:
                self.counters.bad_samples += 1
                self._peer_log.log(
                    logging.WARNING, ("sample", peer_ip), "malformed sample from %s skipped: %s", address, error
                )
        self.counters.samples += len(samples)
        self.counters.datapoints += len(datapoints)
        waiters: list[Callable[[bytes], None]] = [acks.send]
        self._batches[batch_id] = waiters
        if len(self._batches) > REMEMBERED_BATCHES:
            self._batches.popitem(last=False)
        pending = [len(self.sinks)]

        def one_sink_safe() -> None:
            pending[0] -= 1
            if pending[0] == 0:
                if batch_id in self._batches:
                    self._batches[batch_id] = _DONE
                for waiter in waiters:
                    waiter(batch_id)

        for sink in self.sinks:
            sink.submit(datapoints, one_sink_safe)


class AuthenticationError(protocol.ProtocolError):
    """The peer does not prove it knows the shared secret."""


class IdleTimeout(Exception):
    """The agent sent nothing, not even a heartbeat, for too long."""


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


async def read_frame(
    reader: asyncio.StreamReader, timeout: float, idle_timeout: float | None = None
) -> tuple[bytes, bytes]:
    """(kind, payload) of the next frame.

    With ``idle_timeout`` the peer may stay silent between frames that long
    (raising IdleTimeout after); once a frame has begun it must complete
    within ``timeout`` (asyncio.TimeoutError otherwise).
    """
    if idle_timeout is not None:
        try:
            first = await asyncio.wait_for(reader.readexactly(1), idle_timeout)
        except asyncio.TimeoutError:
            raise IdleTimeout() from None
        header = first + await asyncio.wait_for(reader.readexactly(protocol.HEADER_SIZE - 1), timeout)
    else:
        header = await reader.readexactly(protocol.HEADER_SIZE)
    length = protocol.frame_length(header)
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return protocol.split_frame(body)
