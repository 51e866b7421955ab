"""lmaster: accepts agents, turns their samples into datapoints, feeds the sinks.

Each agent connection is its own coroutine, so a slow, silent or hostile peer
costs one task and a socket, never other agents' data. Anything a peer sends
is checked before use: frame length before reading the payload, the hello
before any sample, pickles through :class:`~fructosa.protocol.PlainDataUnpickler`,
and samples through the bounded flattening walk.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

from . import __version__, protocol
from .graphite_paths import Datapoint, SampleError, sample_to_datapoints
from .logs import RateLimitedLog
from .sinks import Sink

log = logging.getLogger(__name__)


SINK_CLOSE_TIMEOUT = 10.0


@dataclass
class MasterCounters:
    connections: int = 0
    rejected: int = 0
    frames: int = 0
    samples: int = 0
    bad_samples: int = 0
    datapoints: int = 0
    agents: dict[str, str] = field(default_factory=dict)


class Master:
    def __init__(self, sinks: list[Sink], listen_sockets: list[socket.socket], peer_timeout: float = 10.0) -> None:
        """``peer_timeout``: seconds a new peer has to send its hello, and any
        frame has to complete once its first byte arrived (slow-loris guard)."""
        self.sinks = sinks
        self.peer_timeout = peer_timeout
        self.listen_sockets = listen_sockets
        self.counters = MasterCounters()
        self._peer_log = RateLimitedLog(log, period=300.0)
        self._connections: set[asyncio.Task] = set()

    async def run(self, stop: asyncio.Event) -> None:
        sink_tasks = [asyncio.create_task(sink.run(), name=f"sink-{sink.name}") for sink in self.sinks]
        servers = [
            await asyncio.start_server(self._accept, sock=sock, limit=protocol.MAX_FRAME + 64)
            for sock in self.listen_sockets
        ]
        for sock in self.listen_sockets:
            address = sock.getsockname()
            log.info("lmaster %s listening on %s port %d for agents", __version__, address[0], address[1])
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
            f"{c.connections} connections ({c.rejected} rejected), {c.samples} samples "
            f"({c.bad_samples} malformed), {c.datapoints} datapoints; {sinks}"
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername") or ("?", 0)
        address = f"{peer[0]}:{peer[1]}"
        self.counters.connections += 1
        try:
            await self._serve_agent(reader, writer, address)
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    def _reject(self, peer_ip: str, address: str, reason: str) -> None:
        self.counters.rejected += 1
        self._peer_log.log(logging.WARNING, peer_ip, "disconnected %s: %s", address, reason)

    async def _serve_agent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str) -> None:
        peer_ip = address.rsplit(":", 1)[0]
        try:
            kind, payload = await asyncio.wait_for(read_frame(reader, self.peer_timeout), self.peer_timeout)
            if kind != protocol.HELLO:
                raise protocol.ProtocolError(f"first frame is {kind!r}, not a hello")
            hello = protocol.check_hello(payload)
        except asyncio.TimeoutError:
            self._reject(peer_ip, address, f"no hello within {self.peer_timeout:g} s")
            return
        except asyncio.IncompleteReadError as error:
            if error.partial:
                self._reject(peer_ip, address, "closed in the middle of its hello")
            else:  # a port probe or health check, not an agent
                log.debug("%s closed the connection without a hello", address)
            return
        except (protocol.ProtocolError, ConnectionError) as error:
            self._reject(peer_ip, address, f"bad hello: {error}")
            return
        agent = f"{hello['host']} ({address}, {hello.get('agent', 'unknown agent')})"
        writer.write(
            protocol.encode_json(
                protocol.WELCOME,
                {
                    "protocol": protocol.PROTOCOL_NAME,
                    "version": protocol.PROTOCOL_VERSION,
                    "master": f"lmaster {__version__}",
                },
            )
        )
        log.info("agent %s connected", agent)
        self.counters.agents[address] = hello["host"]
        try:
            while True:
                kind, payload = await read_frame(reader, self.peer_timeout, idle_ok=True)
                if kind != protocol.SAMPLES:
                    raise protocol.ProtocolError(f"unexpected frame kind {kind!r}")
                self._relay(protocol.decode_samples(payload), peer_ip, address)
        except asyncio.IncompleteReadError as error:
            if error.partial:
                log.warning("agent %s disconnected in the middle of a frame", agent)
            else:
                log.info("agent %s disconnected", agent)
        except ConnectionError as error:
            log.info("agent %s connection lost: %s", agent, error)
        except asyncio.TimeoutError:
            self._reject(peer_ip, address, f"frame incomplete after {self.peer_timeout:g} s")
        except protocol.ProtocolError as error:
            self._reject(peer_ip, address, f"agent {hello['host']}: {error}")
        finally:
            self.counters.agents.pop(address, None)

    def _relay(self, samples: list, peer_ip: str, address: str) -> None:
        datapoints: list[Datapoint] = []
        for sample in samples:
            try:
                sample_to_datapoints(sample, out=datapoints)
            except SampleError as error:
                self.counters.bad_samples += 1
                self._peer_log.log(
                    logging.WARNING, ("sample", peer_ip), "malformed sample from %s skipped: %s", address, error
                )
        self.counters.frames += 1
        self.counters.samples += len(samples)
        self.counters.datapoints += len(datapoints)
        for sink in self.sinks:
            sink.submit(datapoints)


async def read_frame(reader: asyncio.StreamReader, timeout: float, idle_ok: bool = False) -> tuple[bytes, bytes]:
    """(kind, payload) of the next frame.

    With ``idle_ok`` the peer may stay silent between frames for as long as it
    likes, but once a frame has begun it must complete within ``timeout``.
    """
    if idle_ok:
        first = await reader.readexactly(1)
        rest = await asyncio.wait_for(reader.readexactly(protocol.HEADER_SIZE - 1), timeout)
        header = first + rest
    else:
        header = await reader.readexactly(protocol.HEADER_SIZE)
    length = protocol.frame_length(header)
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return protocol.split_frame(body)
