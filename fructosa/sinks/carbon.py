"""Sink to Graphite's carbon pickle receiver (port 2004 by default).

carbon's pickle protocol: a 4-byte big-endian length, then a pickle
(protocol 2) of ``[(path, (timestamp, value)), …]``. carbon's own relay
sends at most 500 datapoints a frame and its receiver refuses frames over
1 MiB, so frames here respect both.

carbon never acknowledges, so this sink keeps what it wrote during the last
``resend_window`` seconds, as the very bytes it wrote (a few buffers a write,
not a datapoint each), and writes them again after the connection breaks
(carbon overwrites the same path and timestamp, so a resend is harmless);
with a spool they go there instead, read back into blocks.
While carbon is away, or the memory queue is deep, datapoints go to the disk
spool and are replayed oldest first once carbon is back; ``close`` persists
what is still in memory. Batches are kept as :class:`~fructosa.wire.blocks.Block` s, with the prefix
added only when the frames are written (:class:`~.carbon_pickle.CarbonPickleEncoder`, straight from
the block). A batch counts as safe (its ``on_safe`` is called,
which lets lmaster acknowledge it to the agent) once it is written to
carbon's socket or to the spool.

Memory is bounded in bytes as well as datapoints (``max_queued_bytes``:
paths + 16 bytes a datapoint, :func:`block_bytes`), since paths may be
2,000 characters long: the memory queue beyond either bound goes to the
spool, and the resend window forgets its oldest batches beyond the byte
bound. :meth:`CarbonPickleSink.pressure` counts against the spool all that
would land in it if carbon went away now (spool, memory queue, resend
window, the write in progress), so lmaster stops taking batches before the
spool could have to drop acknowledged records. If the disk refuses a
record (full), the block stays in memory instead: a new batch is then
acknowledged only once written to carbon, and the memory beyond its bounds
raises the pressure in turn.

The sink is two parts: this module's :class:`CarbonPickleSink` decides (spool or memory, what to
write next, when a batch is safe, what a broken connection sends again), and
:class:`~.carbon_link.CarbonLink` holds the connection and writes what the sink hands it. Blocks
that come one at a time are gathered for :data:`GATHER_SECONDS` into one write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..ratelog import RateLimitedLog
from ..spool import Spool
from ..wire.blocks import Block
from . import Sink, block_bytes
from .batch_queue import Batch, BatchQueue, next_spooled
from .carbon_link import CarbonLink
from .carbon_pickle import CARBON_DATAPOINTS_PER_FRAME, CarbonPickleEncoder
from .resend_window import ResendWindow, Written

if TYPE_CHECKING:
    from ..config import MasterConfig

log = logging.getLogger(__name__)

DATAPOINTS_PER_WRITE = 20 * CARBON_DATAPOINTS_PER_FRAME
BYTES_PER_WRITE = 4 << 20
"""Datapoints (and block bytes) written before each drain: enough to amortize, small
enough to keep the unconfirmed tail, and the frames built for it, short."""
DEFAULT_MAX_QUEUED_BYTES = 256 << 20
GATHER_SECONDS = 0.01
"""A block that finds the connection idle is written this much later, with whatever came meanwhile:
5,000 agents sending a block each every 10 s make 500 small blocks a second, and each write costs a
wakeup, a ``send`` and a resend-window entry whatever its size. Their acknowledgements wait as long
(an agent keeps 32 batches in flight: 10 ms of its acknowledgements is nothing to its window)."""
GATHER_DATAPOINTS = 2 * CARBON_DATAPOINTS_PER_FRAME
"""…unless this many datapoints are waiting already (a relay's large blocks go at once)."""


class CarbonPickleSink(Sink):
    """Blocks to one carbon-cache, acknowledged once written (or spooled); see the module docstring."""

    name = "graphite"

    def __init__(
        self,
        host: str,
        port: int,
        prefix: str = "",
        max_queued: int = 1_000_000,
        spool: Spool | None = None,
        resend_window: float = 5.0,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
    ) -> None:
        self._link = CarbonLink(host, port, self)
        self._encoder = CarbonPickleEncoder(prefix)
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.spool = spool
        self.resend_window = resend_window
        self._queue = BatchQueue()
        self._recent = ResendWindow()
        self._forget_timer: asyncio.TimerHandle | None = None
        self._in_flight: list[Batch] = []
        self._in_flight_bytes = 0
        self._task: asyncio.Task | None = None
        self._counters = {
            "sent": 0, "dropped": 0, "spooled": 0, "resent": 0, "connects": 0, "frames": 0,
            "spool_refused": 0, "resend_forgotten": 0,
        }  # fmt: skip
        self._drop_log = RateLimitedLog(log, period=60.0)
        self._spool_log = RateLimitedLog(log, period=60.0)

    @property
    def host(self) -> str:
        return self._link.host

    @property
    def port(self) -> int:
        return self._link.port

    @property
    def prefix(self) -> str:
        return self._encoder.prefix

    @prefix.setter
    def prefix(self, prefix: str) -> None:
        if prefix != self._encoder.prefix:
            self._encoder = CarbonPickleEncoder(prefix)

    @property
    def connected(self) -> bool:
        return self._link.connected

    @property
    def address(self) -> str:
        return self._link.address

    def reconfigure(self, cfg: MasterConfig) -> None:
        """Reload: new destination, prefix or resend window. A changed address drops the current
        connection; what it held goes to the new carbon (resend window included)."""
        graphite = cfg.graphite
        if len(graphite.destinations) != 1:
            return  # one carbon becoming several is another set of sinks: lmaster says it needs a restart
        (destination,) = graphite.destinations
        self.prefix, self.resend_window = graphite.prefix, graphite.resend_window
        self.max_queued, self.max_queued_bytes = graphite.max_queued_datapoints, graphite.max_queued_bytes
        if (destination.host, destination.port) == (self.host, self.port):
            return
        log.info("carbon destination changes from %s to %s:%d", self.address, destination.host, destination.port)
        self._link.retarget(destination.host, destination.port)

    # -- taking datapoints ---------------------------------------------------

    def submit(self, block: Block, on_safe: Callable[[], None] | None = None) -> None:
        if not len(block):
            if on_safe:
                on_safe()
            return
        if self.spool is not None and (not self._link.connected or self._memory_full()):
            if self._to_spool(block):
                if on_safe:
                    on_safe()
                return
            # the disk refused it: it waits in memory, acknowledged once written to carbon
        batch = Batch(block, on_safe, size=block_bytes(block))
        queue = self._queue
        queue.append(batch)
        if self.spool is None:
            batch.safe()  # memory is all there is: safe as it gets
            if self._memory_full(beyond=True):
                self._drop_oldest()
        if queue.count >= GATHER_DATAPOINTS:
            self._link.wake()
        else:
            self._link.wake_soon(GATHER_SECONDS)

    def _memory_full(self, beyond: bool = False) -> bool:
        """The memory queue is at (``beyond``: over) one of its bounds."""
        count, size = self._waiting()
        if beyond:
            return count > self.max_queued or size > self.max_queued_bytes
        return count >= self.max_queued or size >= self.max_queued_bytes

    def _waiting(self) -> tuple[int, int]:
        """Datapoints and bytes waiting in memory: the queue and (no spool) a lost connection's window."""
        return self._queue.count + self._recent.again_count, self._queue.size + self._recent.again_bytes

    def pressure(self) -> float:
        """With a spool: the share of it that what may land there (spool, memory, resend window, the
        write in progress) would fill, plus memory beyond its bounds when the disk refused records;
        without: the memory queue against its bounds (beyond them it drops the oldest)."""
        self._forget_old(time.monotonic())  # what left the resend window no longer counts
        count, size = self._waiting()
        memory = max(count / self.max_queued, size / self.max_queued_bytes)
        if self.spool is None:
            return memory
        at_risk = self.spool.bytes + self._queue.size + self._recent.bytes + self._in_flight_bytes
        return max(at_risk / self.spool.max_bytes, memory if memory > 1.0 else 0.0)

    def _to_spool(self, block: Block) -> bool:
        """Append a block to the spool; False (counted, logged) when the disk refuses it."""
        assert self.spool is not None
        try:
            self.spool.append(block.encode())
        except OSError as error:
            self._counters["spool_refused"] += len(block)
            self._spool_log.log(
                logging.ERROR, "refused", "carbon %s: spool refused %d datapoints (%s); kept in memory, %d in total",
                self.address, len(block), error, self._counters["spool_refused"],
            )  # fmt: skip
            return False
        self._counters["spooled"] += len(block)
        self._link.wake()
        return True

    def _drop_oldest(self) -> None:
        dropped = 0
        while self._memory_full(beyond=True) and len(self._queue) > 1:
            dropped += len(self._queue.pop_oldest().block)
        self._counters["dropped"] += dropped
        self._drop_log.log(
            logging.WARNING, "drop",
            "carbon %s: queue full (%d datapoints or %d bytes), no spool: dropped the %d oldest; %d dropped in total",
            self.address, self.max_queued, self.max_queued_bytes, dropped, self._counters["dropped"],
        )  # fmt: skip

    # -- delivering (the link asks: carbon_link.WriteSource) -----------------

    async def run(self) -> None:
        self._task = asyncio.current_task()
        await self._link.run()

    def backlog(self) -> str:
        return f"{self._queue.count} datapoints queued, {len(self.spool or ())} spooled batches"

    def on_connected(self) -> None:
        self._counters["connects"] += 1

    def next_write(self) -> tuple[list[bytes], object] | None:
        """No spool: the window of the last connection first, as written; then the memory queue (live
        data), then the spooled backlog."""
        if self._recent.again:
            again = self._recent.take_again(time.monotonic())
            return [buffer for written in again for buffer in written.buffers], again
        batches = self._queue.take(DATAPOINTS_PER_WRITE, BYTES_PER_WRITE)
        if not batches and self.spool is not None:
            replayed = next_spooled(self.spool)
            if replayed is not None:
                batches.append(replayed)
        if not batches:
            return None
        self._in_flight = batches
        self._in_flight_bytes = sum(batch.size for batch in batches)
        prefix, encode = self.prefix, self._encoder.frames
        frames = [frame for batch in batches for frame in encode(batch.block)]
        return frames, (batches, frames, prefix)

    def written(self, token: object) -> None:
        if isinstance(token, list):  # the window written again (back in the resend window as written now)
            self._counters["frames"] += sum(len(written.buffers) for written in token)
            self._keep_forgetting()
            return
        batches, frames, prefix = token  # type: ignore[misc]
        now = time.monotonic()
        count = size = 0
        for batch in batches:
            batch.safe()
            if batch.record_id is not None and self.spool is not None:
                self.spool.ack(batch.record_id)
                batch.record_id = None
            count += len(batch.block)
            size += batch.size
        self._counters["sent"] += count
        if self.resend_window > 0:
            self._recent.add(Written(now, frames, count, size, prefix))
            self._keep_forgetting()
        self._counters["frames"] += len(frames)
        self._in_flight = []
        self._in_flight_bytes = 0
        self._forget_old(now)

    def _keep_forgetting(self) -> None:
        """Forget the oldest write kept when it leaves the resend window, also while the sink is idle (its
        memory); one timer at a time, set for the oldest write, not one per write."""
        oldest = self._recent.oldest()
        if self._forget_timer is None and oldest is not None:
            delay = max(oldest + self.resend_window - time.monotonic(), 0.01)
            self._forget_timer = asyncio.get_running_loop().call_later(delay, self._forget_due)

    def _forget_due(self) -> None:
        self._forget_timer = None
        self._forget_old(time.monotonic())
        self._keep_forgetting()

    def _forget_old(self, now: float) -> None:
        """Forget what left the resend window, and its oldest beyond the byte bound (counted)."""
        self._counters["resend_forgotten"] += self._recent.forget(now - self.resend_window, self.max_queued_bytes)

    def on_disconnected(self) -> None:
        """What carbon may not have stored goes back: the recent window, the
        batches being written, and (with a spool) the memory queue, to disk."""
        self._forget_old(time.monotonic())
        unsent = [batch for batch in self._in_flight if batch.record_id is None]
        self._in_flight = []
        self._in_flight_bytes = 0
        if self._link.closing:  # at shutdown carbon is fine: what it was sent needs no second copy
            self._recent.take()
        elif self.spool is None:
            self._counters["resent"] += self._recent.lose()
        if self.spool is None:
            self._queue.put_back(unsent)
            return
        resend = self._recent.take()
        self._counters["resent"] += sum(written.count for written in resend)
        self.spool.rewind()  # replayed records in flight are read again
        again = [Batch(block, size=block_bytes(block)) for block in (written.block() for written in resend)]
        self._spool_all([*again, *unsent, *self._queue.drain()])

    def _spool_all(self, batches: list[Batch]) -> None:
        """Move batches to the spool; those the disk refuses stay in the memory queue, in order.
        ``batches`` must include whatever the memory queue held (:meth:`BatchQueue.drain`)."""
        for batch in batches:
            if self._to_spool(batch.block):
                batch.safe()
            else:
                self._queue.append(batch)

    async def close(self, timeout: float) -> None:
        """Deliver what is queued within ``timeout`` seconds; persist the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._link.wake()  # a gathered write goes now
        while (self._waiting()[0] or self._in_flight) and self.connected and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self._link.closing = True
        if self._forget_timer is not None:
            self._forget_timer.cancel()
            self._forget_timer = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.spool is not None:
            self._spool_all(self._queue.drain())
            if self._queue.count:
                log.error("carbon %s: %d datapoints lost at shutdown (spool refused)", self.address, self._queue.count)
            log.info(
                "carbon %s: %d batches kept in spool %s for the next start",
                self.address, len(self.spool), self.spool.directory,
            )  # fmt: skip
            self.spool.close()
        elif self._waiting()[0]:
            log.warning(
                "carbon %s: %d datapoints not delivered at shutdown (no spool)", self.address, self._waiting()[0]
            )

    def stats(self) -> dict[str, int]:
        spool = self.spool
        return {
            "queued": self._waiting()[0], "queued_bytes": self._waiting()[1], "spool_batches": len(spool or ()),
            "spool_dropped": spool.dropped if spool is not None else 0, **self._counters,
        }  # fmt: skip
