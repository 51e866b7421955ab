"""Sink to an upstream lmaster: relay trees for multi-site or very large clusters.

A site's lmaster connects to the central one as a *relay*: the agent
protocol, with ``"relay": true`` in its hello (the upstream must allow it
with ``accept relays = yes``, since a relay writes paths of many hosts).
It forwards the agents' blocks as ``D`` frames with its own batch ids and
keeps each frame until the upstream acknowledges it, and only then calls the
frame's ``on_safe`` callbacks, which lets it acknowledge the batches to its
own agents. So the guarantee is end to end: while the upstream is away,
nothing is acknowledged downstream, the agents' windows fill and they spool
on their own disks; after a reconnect, unacknowledged frames are sent again
with the same ids and the upstream drops the duplicates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import __version__
from ..backoff import Backoff
from ..ratelog import RateLimitedLog
from ..wire import protocol
from ..wire.blocks import Block, concat
from ..wire.session import open_session, read_frame
from . import Sink

if TYPE_CHECKING:
    from ..config import MasterConfig

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
MAX_UNACKNOWLEDGED = 64
"""Frames in flight before waiting for the upstream's acknowledgements."""
HEARTBEAT_INTERVAL = 30.0
MAX_BLOCK_BYTES = protocol.MAX_FRAME - 1 - protocol.BATCH_ID_SIZE


class UpstreamSink(Sink):
    name = "upstream"

    def __init__(
        self, host: str, port: int, hostname: str, secret: bytes | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.host, self.port, self.hostname = host, port, hostname
        self.secret, self.tls = secret, tls
        self.session = os.urandom(16)
        self._sequence = 0
        self._queue: deque[tuple[Block, Callable[[], None] | None]] = deque()
        self._queued = 0
        self._unacknowledged: OrderedDict[bytes, tuple[bytes, list[Callable[[], None]], int]] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._counters = {"sent": 0, "acknowledged": 0, "frames": 0, "resent_frames": 0, "connects": 0}
        self._connect_log = RateLimitedLog(log, period=300.0)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def submit(self, block: Block, on_safe: Callable[[], None] | None = None) -> None:
        if not len(block):
            if on_safe:
                on_safe()
            return
        self._queue.append((block, on_safe))
        self._queued += len(block)
        self._wakeup.set()

    async def run(self) -> None:
        self._task = asyncio.current_task()
        backoff = Backoff(maximum=30.0)
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None
                    ),
                    CONNECT_TIMEOUT,
                )
            except (OSError, asyncio.TimeoutError) as error:
                self._unreachable(error)
                await asyncio.sleep(backoff.next_delay())
                continue
            try:
                hello = {"agent": f"lmaster {__version__} (relay)", "relay": True, "heartbeat": HEARTBEAT_INTERVAL}
                await open_session(reader, writer, self.hostname, self.secret, hello, "upstream lmaster")
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, protocol.ProtocolError) as error:
                writer.close()
                self._unreachable(error)
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._counters["connects"] += 1
            self._connect_log = RateLimitedLog(log, period=300.0)
            log.info(
                "relaying to upstream lmaster %s (%d datapoints queued, %d frames to send again)",
                self.address, self._queued, len(self._unacknowledged),
            )  # fmt: skip
            try:
                await self._stream(reader, writer)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, protocol.ProtocolError) as error:
                log.warning("lost upstream lmaster %s: %s", self.address, error or type(error).__name__)
            finally:
                writer.close()

    def _unreachable(self, error: BaseException) -> None:
        self._connect_log.log(
            logging.WARNING, "connect", "upstream lmaster %s unreachable (%s); %d datapoints waiting",
            self.address, str(error) or type(error).__name__, self._queued,
        )  # fmt: skip

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        acks = asyncio.ensure_future(self._read_acks(reader))
        try:
            for body, _, _ in self._unacknowledged.values():
                writer.write(protocol.encode_frame(protocol.DATAPOINTS, body))
                self._counters["resent_frames"] += 1
            while True:
                if acks.done():
                    acks.result()
                    raise ConnectionError("closed by the upstream lmaster")
                if not self._queue or len(self._unacknowledged) >= MAX_UNACKNOWLEDGED:
                    self._wakeup.clear()
                    wakeup = asyncio.ensure_future(self._wakeup.wait())
                    done, _ = await asyncio.wait(
                        {wakeup, acks}, timeout=HEARTBEAT_INTERVAL, return_when=asyncio.FIRST_COMPLETED
                    )
                    wakeup.cancel()
                    if not done:  # quiet: tell the upstream we are alive
                        backlog = json.dumps({"queued": self._queued}).encode()
                        writer.write(protocol.encode_frame(protocol.HEARTBEAT, backlog))
                    continue
                writer.write(protocol.encode_frame(protocol.DATAPOINTS, self._next_body()))
                await writer.drain()
        finally:
            acks.cancel()

    def _next_body(self) -> bytes:
        """The next frame: queued blocks merged up to the frame cap, remembered until acknowledged."""
        blocks: list[Block] = []
        callbacks: list[Callable[[], None]] = []
        size = 0
        while self._queue:
            block, on_safe = self._queue[0]
            cost = len(block.paths) + 16 * len(block) + 12
            if blocks and size + cost > MAX_BLOCK_BYTES:
                break
            self._queue.popleft()
            self._queued -= len(block)
            blocks.append(block)
            size += cost
            if on_safe is not None:
                callbacks.append(on_safe)
        merged = concat(blocks)
        self._sequence += 1
        batch_id = protocol.batch_id(self.session, self._sequence)
        body = batch_id + merged.encode()
        self._unacknowledged[batch_id] = (body, callbacks, len(merged))
        self._counters["frames"] += 1
        self._counters["sent"] += len(merged)
        return body

    async def _read_acks(self, reader: asyncio.StreamReader) -> None:
        while True:
            kind, payload = await read_frame(reader)
            if kind != protocol.ACK:
                raise protocol.ProtocolError(f"unexpected frame {kind!r} from the upstream lmaster")
            for batch_id in protocol.decode_acks(payload):
                entry = self._unacknowledged.pop(batch_id, None)
                if entry is None:
                    continue
                _, callbacks, count = entry
                self._counters["acknowledged"] += count
                for on_safe in callbacks:
                    on_safe()
            self._wakeup.set()

    async def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the upstream to acknowledge everything; what
        it has not is not acknowledged downstream either, so the agents send it again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._queue or self._unacknowledged) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._queue or self._unacknowledged:
            log.warning(
                "upstream lmaster %s: %d datapoints unacknowledged at shutdown; the agents will send them again",
                self.address, self._queued + sum(entry[2] for entry in self._unacknowledged.values()),
            )  # fmt: skip

    def stats(self) -> dict[str, int]:
        return {"queued": self._queued, "unacknowledged_frames": len(self._unacknowledged), **self._counters}

    def reconfigure(self, cfg: MasterConfig) -> None:
        """Reload: the upstream's address and the secret stay as they were at start (this
        sink's session and unacknowledged frames belong to that upstream); a change waits for the restart."""
        upstream = cfg.upstream
        if upstream is not None and (upstream.host, upstream.port, upstream.link.secret) != (
            self.host, self.port, self.secret
        ):  # fmt: skip
            log.warning("reload: a change of [upstream] address or secret takes effect at the next restart")
