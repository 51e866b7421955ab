"""Sink to Graphite's carbon pickle receiver (port 2004 by default).

carbon's pickle protocol: a 4-byte big-endian length, then a pickle
(protocol 2) of ``[(path, (timestamp, value)), …]``. carbon's own relay
sends at most 500 datapoints a frame and its receiver refuses frames over
1 MiB, so frames here respect both.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
from collections import deque

from ..backoff import Backoff
from ..graphite_paths import Datapoint
from ..logs import RateLimitedLog
from . import Sink

log = logging.getLogger(__name__)

MAX_DATAPOINTS_PER_FRAME = 500
MAX_FRAME_BYTES = 1 << 20
CONNECT_TIMEOUT = 10.0


def carbon_frames(datapoints: list[Datapoint]) -> list[bytes]:
    """Pickle frames for carbon, each ≤ 500 datapoints and < 1 MiB."""
    frames = []
    for start in range(0, len(datapoints), MAX_DATAPOINTS_PER_FRAME):
        frames.extend(_frames_under_cap(datapoints[start : start + MAX_DATAPOINTS_PER_FRAME]))
    return frames


def _frames_under_cap(chunk: list[Datapoint]) -> list[bytes]:
    payload = pickle.dumps(chunk, protocol=2)
    if len(payload) < MAX_FRAME_BYTES or len(chunk) == 1:
        return [struct.pack("!L", len(payload)) + payload]
    middle = len(chunk) // 2
    return _frames_under_cap(chunk[:middle]) + _frames_under_cap(chunk[middle:])


class CarbonPickleSink(Sink):
    """Queues datapoints in memory (bounded) and streams them to carbon."""

    name = "graphite"

    def __init__(self, host: str, port: int, prefix: str = "", max_queued: int = 1_000_000) -> None:
        self.host = host
        self.port = port
        self.prefix = prefix
        self.max_queued = max_queued
        # Whole incoming batches are queued as chunks: no per-datapoint deque work.
        self._chunks: deque[list[Datapoint]] = deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing = False
        self._in_flight: list[Datapoint] = []
        self._counters = {"sent": 0, "dropped": 0, "connects": 0, "frames": 0}
        self._drop_log = RateLimitedLog(log, period=60.0)
        self._connect_log = RateLimitedLog(log, period=300.0)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def submit(self, datapoints: list[Datapoint]) -> None:
        if not datapoints:
            return
        if self.prefix:
            datapoints = [(f"{self.prefix}.{path}", point) for path, point in datapoints]
        self._chunks.append(datapoints)
        self._queued += len(datapoints)
        if self._queued > self.max_queued:
            self._drop_oldest()
        self._wakeup.set()

    def _drop_oldest(self) -> None:
        dropped = 0
        while self._queued > self.max_queued and len(self._chunks) > 1:
            chunk = self._chunks.popleft()
            self._queued -= len(chunk)
            dropped += len(chunk)
        self._counters["dropped"] += dropped
        self._drop_log.log(
            logging.WARNING,
            "drop",
            "carbon %s: queue full (%d datapoints), dropped the %d oldest; %d dropped in total",
            self.address,
            self.max_queued,
            dropped,
            self._counters["dropped"],
        )

    def _take(self, limit: int) -> list[Datapoint]:
        batch: list[Datapoint] = []
        while self._chunks and len(batch) < limit:
            chunk = self._chunks[0]
            room = limit - len(batch)
            if len(chunk) <= room:
                batch.extend(self._chunks.popleft())
            else:
                batch.extend(chunk[:room])
                self._chunks[0] = chunk[room:]
        self._queued -= len(batch)
        return batch

    def _requeue_in_flight(self) -> None:
        """Put back what may not have reached carbon (a resend is harmless:
        carbon overwrites the same path and timestamp)."""
        if self._in_flight:
            self._chunks.appendleft(self._in_flight)
            self._queued += len(self._in_flight)
            self._in_flight = []

    async def run(self) -> None:
        backoff = Backoff()
        while not self._closing:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as error:
                reason = str(error) or type(error).__name__
                self._connect_log.log(
                    logging.WARNING,
                    "connect",
                    "carbon %s unreachable (%s); %d datapoints queued, retrying",
                    self.address,
                    reason,
                    self._queued,
                )
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._counters["connects"] += 1
            log.info("connected to carbon %s (%d datapoints queued)", self.address, self._queued)
            self._connect_log = RateLimitedLog(log, period=300.0)
            self._connected.set()
            try:
                await self._stream(reader, writer)
            except (OSError, ConnectionError) as error:
                log.warning("lost connection to carbon %s: %s", self.address, error)
            finally:
                self._connected.clear()
                self._requeue_in_flight()
                writer.close()

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        closed_by_carbon = asyncio.ensure_future(reader.read(1))
        try:
            while True:
                batch = self._take(MAX_DATAPOINTS_PER_FRAME * 20)
                if not batch:
                    self._wakeup.clear()
                    wakeup = asyncio.ensure_future(self._wakeup.wait())
                    await asyncio.wait({wakeup, closed_by_carbon}, return_when=asyncio.FIRST_COMPLETED)
                    wakeup.cancel()
                    if closed_by_carbon.done():
                        raise ConnectionError("connection closed by carbon")
                    continue
                self._in_flight = batch
                frames = carbon_frames(batch)
                writer.writelines(frames)
                await writer.drain()
                self._in_flight = []
                self._counters["sent"] += len(batch)
                self._counters["frames"] += len(frames)
        finally:
            closed_by_carbon.cancel()

    async def close(self, timeout: float) -> None:
        """Give queued datapoints ``timeout`` seconds to reach carbon, then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._queued or self._in_flight) and self._connected.is_set() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self._closing = True
        lost = self._queued + len(self._in_flight)
        if lost:
            log.warning("carbon %s: %d datapoints not delivered at shutdown", self.address, lost)

    def stats(self) -> dict[str, int]:
        return {"queued": self._queued, **self._counters}
