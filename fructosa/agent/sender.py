"""lagent's sending: samples into numbered batches, over the session to lmaster,
through the disk spool while lmaster is away.

Live samples go first and the spooled backlog drains in between, oldest
first. Without a spool, batches in flight stay in memory and go again after
a reconnect; with one, they are written to it when the connection breaks and
read from it again (so a restart of the agent does not lose them either).
The session itself (ids, window, acknowledgements, heartbeats, reconnecting)
is :class:`fructosa.wire.session.SendingSession`, shared with a relaying lmaster.
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import __version__
from ..config import AgentConfig
from ..spool import Spool
from ..wire import auth, protocol
from ..wire.blocks import Block, BlockFramer, encode_joined, split_for_frames
from ..wire.session import Outbox, SendingSession, connect
from .facts import gpu_facts, hello_facts
from .queue import SampleQueue

if TYPE_CHECKING:
    import ssl  # named only: lagent without TLS keeps ssl out (wire.auth.keep_openssl_out)

log = logging.getLogger(__package__)

MAX_SAMPLES_PER_BATCH = 1000
MAX_UNACKNOWLEDGED = 32
"""Batches in flight before the agent waits for acknowledgements."""
ACK_POLL_BATCHES = MAX_UNACKNOWLEDGED // 4
"""Batches in flight at which a tick first reads lmaster's acknowledgements (every eighth tick of
sensors at 1 s). Each read is a system call and parsing, paid by a tick; the acknowledgements
wait in the socket meanwhile. The batches they free stay in memory until then (eight ticks' frames,
a few KB each), well under the half window at which the transport reads on arrival. A lmaster that
went away is seen by the second write after it closed the connection (or a heartbeat), and the
acknowledgements waiting in the socket are read then too (the connection's end reads them): only
the batches lmaster had not acknowledged go again after the reconnect."""
SPILL_INTERVAL = 1.0
"""While lmaster is away, queued samples go to the spool within this many
seconds of being measured, so a killed agent loses at most this much."""
SPILL_THRESHOLD = 5000
"""Samples queued in memory beyond which they go to the spool even while connected."""

SpoolRecord = tuple[int, int]


class Sender(Outbox):
    """The agent's :class:`Outbox`: a batch's tag is its spool record (None for a live batch)."""

    def __init__(
        self,
        config: AgentConfig,
        queue: SampleQueue[Block],
        spool: Spool | None,
        tls: ssl.SSLContext | None,
        intervals: Callable[[], dict[str, float]] = dict,
    ) -> None:
        self.config = config
        self.queue = queue
        self.spool = spool
        self.tls = tls
        """From :func:`fructosa.wire.auth.client_context_for`, as every TLS decision."""
        self.spooled = 0
        """Batches written to the spool."""
        self._ready: deque[bytes] = deque()  # live batches encoded (whole D frames), not yet sent
        self._lead: Block | None = None
        """A tick's block handed over by :meth:`send_tick` while the session sends: the next batch, ahead of an
        empty queue (see there). None at any other time."""
        self._framer = BlockFramer()
        self.intervals = intervals
        """Each sensor's current interval (the adaptive plan's), for the hello's facts."""
        self._told: dict = {}
        """The changing facts (sensor intervals, GPUs) lmaster was last told, in a hello or heartbeat."""
        # No lingering for more data: the sensors due at one instant are measured in one go, so
        # their samples are all queued before the session runs again and travel in one batch.
        self.session = SendingSession(
            self,
            log,
            MAX_UNACKNOWLEDGED,
            config.heartbeat_interval,
            defer_acks=True,
            ack_poll_batches=ACK_POLL_BATCHES,
        )
        self._spill_timer: asyncio.TimerHandle | None = None
        self._send_soon = False
        """A :meth:`send_now` is scheduled (by :meth:`wake`)."""
        self._last_spill = float("-inf")

    @property
    def address(self) -> str:
        return f"{self.config.master_host}:{self.config.master_port}"

    def reconfigure(self, config: AgentConfig) -> None:
        """A reload: reconnect when lmaster's address or the link's security changed."""
        old = self.config
        self.config = config
        self.session.heartbeat_interval = config.heartbeat_interval
        if (old.master_host, old.master_port, old.link) != (config.master_host, config.master_port, config.link):
            self.tls = auth.client_context_for(config.link)
            log.info("reload: lmaster address or security changed: reconnecting to %s", self.address)
            self.session.reconnect()

    def wake(self) -> None:
        """A sample was queued (others may follow from the callback running now): they go as a
        tick's do (:meth:`send_now`) right after it, with one callback, not a pass of the session's loop."""
        if not self._send_soon:
            self._send_soon = True
            asyncio.get_running_loop().call_soon(self.send_now)

    def send_now(self) -> None:
        """The samples of one tick are all queued: to lmaster right away when the session can take
        them (no pass of its loop), else once it can; or to the spool while lmaster is away (or slow)."""
        self._send_soon = False
        if not self.session.send_now():
            self._spill_soon()

    def send_tick(self, block: Block) -> None:
        """A tick's block, holding all its samples, not queued yet: as :meth:`queue.put <SampleQueue.put>` of it
        then :meth:`send_now`, without entering and leaving the queue when nothing waits before it (the steady
        state): the session then takes it as its next batch (:meth:`next_frame`) and it goes straight into its
        frame and to the socket. When the session does not take it (lmaster away, the window full, the stream
        busy), it is queued right after, before anything else can run, and all goes on as if it had been: the
        queue, its bound and drop count, the spill to the spool and the batches are exactly those of the
        queued path."""
        queue = self.queue
        if self._ready or queue.queued:  # others wait before it: in its turn
            queue.put(block, block.samples)
            self.send_now()
            return
        self._send_soon = False
        self._lead = block
        try:
            sent = self.session.send_now()
        finally:
            if self._lead is not None:  # not taken: queued, as it would have been before
                self._lead = None
                queue.put(block, block.samples)
        if not sent:
            self._spill_soon()

    def _spill_soon(self) -> None:
        """What the session could not send goes to the spool while lmaster is away (or slow)."""
        if self.spool is not None and self._spill_timer is None and self._should_spill():
            loop = asyncio.get_running_loop()
            # After the other samples of this instant: right after it when the previous spill is
            # half an interval old (a sensor's tick pays for it, no wakeup of its own), else a
            # SPILL_INTERVAL after the previous one.
            now = loop.time()
            due = now if now - self._last_spill >= SPILL_INTERVAL / 2 else self._last_spill + SPILL_INTERVAL
            self._spill_timer = loop.call_at(due, self._spill_due)

    def unsent(self) -> bool:
        return bool(len(self.queue) or self._ready)

    # -- the Outbox ---------------------------------------------------------

    async def dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        config = self.config
        facts = hello_facts(self.intervals())
        self._told = {name: facts.get(name) for name in protocol.HEARTBEAT_FACTS}
        hello = {"agent": f"lagent {__version__}", "heartbeat": config.heartbeat_interval, "facts": facts}
        return await connect(
            config.master_host, config.master_port, self.tls, config.hostname, config.link.secret, hello, "lmaster"
        )

    def next_frame(self) -> tuple[bytes, SpoolRecord | None] | None:
        """Live samples first, then the spooled backlog. A tick's block is encoded straight into its
        frame (:class:`~fructosa.wire.blocks.BlockFramer`); the spool keeps bodies, framed when read."""
        lead = self._lead
        if lead is not None:  # a tick's block, ahead of an empty queue (send_tick)
            self._lead = None
            frame = self._framer.frame(lead, self.session.new_batch_id)
            if frame is not None:
                return frame, None
            self.queue.put(lead, lead.samples)  # too big for one frame: the queued path splits it
        ready = self._ready
        if not ready and self.queue.queued:
            samples = self.queue.take(MAX_SAMPLES_PER_BATCH)
            if len(samples) == 1:  # a tick's block
                frame = self._framer.frame(samples[0], self.session.new_batch_id)
                if frame is not None:
                    return frame, None
            bodies = encode_batches(samples, self.session.new_batch_id)
            ready.extend([protocol.encode_frame(protocol.DATAPOINTS, body) for body in bodies])
        if ready:
            return ready.popleft(), None
        if self.spool is not None and self.spool.unread():
            record = self.spool.read_next()
            if record is not None:
                record_id, body = record
                return protocol.encode_frame(protocol.DATAPOINTS, body), record_id
        return None

    def next_batch(self) -> tuple[bytes, SpoolRecord | None] | None:
        """:meth:`next_frame`'s batch, unframed."""
        batch = self.next_frame()
        return None if batch is None else (batch[0][protocol.PAYLOAD_START :], batch[1])

    def on_acknowledged(self, tag: object) -> None:
        if isinstance(tag, tuple) and self.spool is not None:  # a spool record, as next_batch made it
            self.spool.ack(tag)

    def backlog(self) -> dict:
        """The heartbeat's payload: the backlog, and the changing facts when they changed since lmaster heard them."""
        news = self._facts_news()
        self._told.update(news)
        return {"queued": len(self.queue), "spooled": len(self.spool or ()), **news}

    def _facts_news(self) -> dict:
        current = {"sensors": self.intervals(), **gpu_facts()}
        return {name: value for name, value in current.items() if self._told.get(name) != value}

    def note_facts(self) -> None:
        """Sensor intervals or the GPUs may have changed: tell lmaster at once in a heartbeat if so."""
        if self.session.connected.is_set() and self._facts_news():
            self.session.heartbeat_soon()

    def describe_backlog(self) -> str:
        return f"{len(self.queue)} samples queued, {len(self.spool or ())} batches spooled"

    def on_disconnected(self) -> None:
        """Unacknowledged live batches go to the spool and spooled ones will be read
        again; without a spool they stay in flight and go again after reconnecting."""
        if self.spool is None:
            return
        for body, record in self.session.take_in_flight():
            if record is None:
                self._spool_body(body)
        self.spool.rewind()
        self.spill()

    # -- the spool ----------------------------------------------------------

    def _new_batches(self, limit: int) -> list[bytes]:
        return encode_batches(self.queue.take(limit), self.session.new_batch_id)

    def _spool_body(self, body: bytes) -> None:
        assert self.spool is not None
        self.spool.append(body)
        self.spooled += 1

    def spill(self) -> None:
        """Everything queued or encoded goes to the spool."""
        if self._lead is not None:  # (only while the session sends: send_tick)
            self.queue.put(self._lead, self._lead.samples)
            self._lead = None
        while self._ready:
            self._spool_body(self._ready.popleft()[protocol.PAYLOAD_START :])
        while len(self.queue):
            for body in self._new_batches(MAX_SAMPLES_PER_BATCH):
                self._spool_body(body)

    def _should_spill(self) -> bool:
        return not self.session.connected.is_set() or len(self.queue) > SPILL_THRESHOLD

    def _spill_due(self) -> None:
        """Move queued samples to the spool while lmaster is away (or slow): a timer set
        only when a sample comes in then, so a connected agent has no timer for it."""
        self._spill_timer = None
        self._last_spill = asyncio.get_running_loop().time()
        if self._should_spill():
            self.spill()

    def cancel_spill(self) -> None:
        """At shutdown: :meth:`persist` spools what is left."""
        if self._spill_timer is not None:
            self._spill_timer.cancel()
            self._spill_timer = None

    async def flush(self, timeout: float) -> None:
        """On shutdown: give queued and unacknowledged batches a chance to land while connected."""
        await self.session.flush(timeout, self.unsent, only_while_connected=True)

    def persist(self) -> None:
        """At shutdown, after the session stopped: whatever is not acknowledged goes
        to the spool (or is counted lost)."""
        live = [body for body, record in self.session.take_in_flight() if record is None]
        live.extend(frame[protocol.PAYLOAD_START :] for frame in self._ready)
        self._ready.clear()
        if self.spool is None:
            if live or len(self.queue):
                log.warning("no spool: %d batches and %d samples not delivered at shutdown", len(live), len(self.queue))
            return
        for body in live:
            self._spool_body(body)
        self.spill()
        self.spool.close()


_BLOCK_HEADER = len(Block().encode())


def encode_batches(samples: list[Block], new_batch_id: Callable[[], bytes]) -> list[bytes]:
    """``D`` frame bodies (batch id + block) of samples already flattened into
    one-sample blocks, joined so that each block fits the frame cap; lmaster
    only checks and forwards. A sample too large for one frame is split.
    A tick's samples fit one frame: one join of their buffers, batch id included."""
    room = protocol.MAX_FRAME - 1 - protocol.BATCH_ID_SIZE
    if not samples:
        return []
    count = sum([len(sample.times) for sample in samples])
    if _BLOCK_HEADER + sum([len(sample.paths) for sample in samples]) + len(samples) + 16 * count <= room:
        if not count:
            return []  # samples without datapoints make no batch
        return [encode_joined(samples, sum([sample.samples for sample in samples]), new_batch_id())]
    joined: list[Block] = []
    chunk: list[Block] = []
    size = _BLOCK_HEADER
    for sample in samples:
        cost = len(sample.paths) + 1 + 16 * len(sample)
        if chunk and size + cost > room:
            joined.append(_joined(chunk))
            chunk, size = [], _BLOCK_HEADER
        if _BLOCK_HEADER + cost > room:  # alone over the cap: its datapoints in several blocks
            joined.extend(Block.of(part) for part in split_for_frames(sample.datapoints(), room))
            continue
        chunk.append(sample)
        size += cost
    if chunk:
        joined.append(_joined(chunk))
    joined = [block for block in joined if len(block)]  # samples without datapoints make no batch
    if joined:
        joined[0].samples = sum(sample.samples for sample in samples)  # a tick's block holds several
        for block in joined[1:]:
            block.samples = 0
    return [new_batch_id() + block.encode() for block in joined]


def _joined(samples: list[Block]) -> Block:
    """One block of the datapoints of ``samples``, in order (no tuple per datapoint)."""
    if len(samples) == 1:
        return Block(samples[0].paths, samples[0].times, samples[0].values)
    nonempty = [sample for sample in samples if len(sample)]
    times, values = array("d"), array("d")
    for sample in nonempty:
        times += sample.times
        values += sample.values
    return Block(b"\n".join(sample.paths for sample in nonempty), times, values)
