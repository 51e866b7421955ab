"""Sink to an upstream lmaster: relay trees for multi-site or very large clusters.

A site's lmaster connects to the central one as a *relay*: the agent
protocol, with ``"relay": true`` in its hello (the upstream must allow it
with ``accept relays = yes``, since a relay writes paths of many hosts).
It forwards the agents' blocks as ``D`` frames with its own batch ids and
keeps each frame until the upstream acknowledges it, and only then calls the
frame's ``on_safe`` callbacks, which lets it acknowledge the batches to its
own agents. So the guarantee is end to end: while the upstream is away,
nothing is acknowledged downstream, the agents' windows fill and they spool
on their own disks (and while its memory queue nears ``max_queued`` datapoints
or ``max_queued_bytes`` bytes, :meth:`UpstreamSink.pressure` makes lmaster stop
taking batches, so the queue stays bounded in memory); after a reconnect, unacknowledged frames are sent again
with the same ids and the upstream drops the duplicates. The session (ids,
window, acknowledgements, resending, heartbeats, reconnecting) is
:class:`fructosa.wire.session.SendingSession`, the same as lagent's.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import __version__
from ..wire import protocol
from ..wire.blocks import Block, concat
from ..wire.session import Outbox, SendingSession, connect
from . import Sink, block_bytes

if TYPE_CHECKING:
    from ..config import MasterConfig

log = logging.getLogger(__name__)

MAX_UNACKNOWLEDGED = 64
"""Frames in flight before waiting for the upstream's acknowledgements."""
HEARTBEAT_INTERVAL = 30.0
MAX_BLOCK_BYTES = protocol.MAX_FRAME - 1 - protocol.BATCH_ID_SIZE
DEFAULT_MAX_QUEUED = 1_000_000
DEFAULT_MAX_QUEUED_BYTES = 256 << 20


@dataclass
class Frame:
    """What an upstream acknowledgement of one frame settles: its datapoints
    and the downstream batches they came in."""

    datapoints: int
    on_safe: list[Callable[[], None]]


class UpstreamSink(Sink, Outbox):
    name = "upstream"
    peer_name = "upstream lmaster"
    connected_verb = "relaying to"

    def __init__(
        self, host: str, port: int, hostname: str, secret: bytes | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.host, self.port, self.hostname = host, port, hostname
        self.secret, self.tls = secret, tls
        self._queue: deque[tuple[Block, Callable[[], None] | None]] = deque()
        self._queued = 0
        self._queued_bytes = 0
        self.max_queued = DEFAULT_MAX_QUEUED
        self.max_queued_bytes = DEFAULT_MAX_QUEUED_BYTES
        self._task: asyncio.Task | None = None
        self._counters = {"sent": 0, "acknowledged": 0}
        self._session = SendingSession(self, log, MAX_UNACKNOWLEDGED, HEARTBEAT_INTERVAL)

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
        self._queued_bytes += block_bytes(block)
        self._session.wake()

    def pressure(self) -> float:
        """The memory queue against its bounds; it never drops, lmaster stops taking batches near 1.0."""
        return max(self._queued / self.max_queued, self._queued_bytes / self.max_queued_bytes)

    async def run(self) -> None:
        self._task = asyncio.current_task()
        await self._session.run()

    async def dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        hello = {"agent": f"lmaster {__version__} (relay)", "relay": True, "heartbeat": HEARTBEAT_INTERVAL}
        return await connect(self.host, self.port, self.tls, self.hostname, self.secret, hello, self.peer_name)

    def next_batch(self) -> tuple[bytes, Frame] | None:
        """The next frame: queued blocks merged up to the frame cap."""
        if not self._queue:
            return None
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
            self._queued_bytes -= block_bytes(block)
            blocks.append(block)
            size += cost
            if on_safe is not None:
                callbacks.append(on_safe)
        merged = concat(blocks)
        self._counters["sent"] += len(merged)
        return self._session.new_batch_id() + merged.encode(), Frame(len(merged), callbacks)

    def on_acknowledged(self, tag: object) -> None:
        assert isinstance(tag, Frame)
        self._counters["acknowledged"] += tag.datapoints
        for on_safe in tag.on_safe:
            on_safe()

    def backlog(self) -> dict[str, int]:
        return {"queued": self._queued}

    def describe_backlog(self) -> str:
        return f"{self._queued} datapoints queued, {len(self._session.in_flight)} frames to send again"

    def on_disconnected(self) -> None:
        """Frames in flight stay there and go again, with the same ids, after the reconnect."""

    async def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the upstream to acknowledge everything; what
        it has not is not acknowledged downstream either, so the agents send it again."""
        await self._session.flush(timeout, lambda: bool(self._queue))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._queue or self._session.in_flight:
            in_flight = self._session.in_flight.values()
            unacknowledged = sum(frame.datapoints for _, frame in in_flight if isinstance(frame, Frame))
            log.warning(
                "upstream lmaster %s: %d datapoints unacknowledged at shutdown; the agents will send them again",
                self.address, self._queued + unacknowledged,
            )  # fmt: skip

    def stats(self) -> dict[str, int]:
        session = self._session
        return {
            "queued": self._queued,
            "queued_bytes": self._queued_bytes,
            "unacknowledged_frames": len(session.in_flight),
            **self._counters,
            "frames": session.sent,
            "resent_frames": session.resent,
            "connects": session.connects,
        }

    def reconfigure(self, cfg: MasterConfig) -> None:
        """Reload: the upstream's address and the secret stay as they were at start (this
        sink's session and unacknowledged frames belong to that upstream); a change waits for the restart."""
        self.max_queued, self.max_queued_bytes = cfg.graphite.max_queued_datapoints, cfg.graphite.max_queued_bytes
        upstream = cfg.upstream
        if upstream is not None and (upstream.host, upstream.port, upstream.link.secret) != (
            self.host, self.port, self.secret
        ):  # fmt: skip
            log.warning("reload: a change of [upstream] address or secret takes effect at the next restart")
