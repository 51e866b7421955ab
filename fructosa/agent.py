"""lagent: runs the configured sensors and streams their samples to lmaster.

Each sensor is a coroutine on its own fixed grid of the monotonic clock
(``start + k·interval``), so intervals do not drift by the time a
measurement takes; psutil calls run in worker threads so a slow one (a hung
NFS mount under DiskUsage) stalls only its own sensor. Samples wait in a
bounded in-memory queue while lmaster is away; the sender reconnects with
backoff and sends the backlog oldest first. Every drop is counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from . import __version__, protocol
from .backoff import Backoff
from .config import AgentConfig, SensorConfig
from .logs import RateLimitedLog
from .sensors import REGISTRY, SensorUnsupported

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
WELCOME_TIMEOUT = 10.0
MAX_SAMPLES_PER_FRAME = 1000
COALESCE_DELAY = 0.05
"""Seconds the sender waits after a wake-up so samples due at the same
instant travel in one frame."""
FLUSH_TIMEOUT = 5.0


class SampleQueue:
    """Bounded FIFO of samples that drops (and counts) the oldest when full."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self._samples: deque[dict] = deque()
        self.dropped = 0
        self.nonempty = asyncio.Event()
        self._drop_log = RateLimitedLog(log, period=60.0)

    def __len__(self) -> int:
        return len(self._samples)

    def put(self, sample: dict) -> None:
        self._samples.append(sample)
        if len(self._samples) > self.max_samples:
            self._samples.popleft()
            self.dropped += 1
            self._drop_log.log(
                logging.WARNING,
                "full",
                "sample queue full (%d samples, lmaster unreachable?): dropping the oldest; %d dropped in total",
                self.max_samples,
                self.dropped,
            )
        self.nonempty.set()

    def take(self, limit: int) -> list[dict]:
        count = min(limit, len(self._samples))
        batch = [self._samples.popleft() for _ in range(count)]
        if not self._samples:
            self.nonempty.clear()
        return batch

    def put_back(self, batch: list[dict]) -> None:
        """Return an unsent batch to the front, keeping the oldest-first order."""
        self._samples.extendleft(reversed(batch))
        while len(self._samples) > self.max_samples:
            self._samples.popleft()
            self.dropped += 1
        if self._samples:
            self.nonempty.set()


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.queue = SampleQueue(config.max_queued_samples)
        self.sent = 0
        self.connected = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=max(1, len(config.sensors)), thread_name_prefix="sensor")
        self._connect_log = RateLimitedLog(log, period=300.0)

    @property
    def master_address(self) -> str:
        return f"{self.config.master_host}:{self.config.master_port}"

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "lagent %s as host %r, sending to lmaster %s, %d sensors",
            __version__,
            self.config.hostname,
            self.master_address,
            len(self.config.sensors),
        )
        if not self.config.sensors:
            log.warning("no [sensor:NAME] section in %s: nothing to measure", self.config.path)
        sensor_tasks = [
            asyncio.create_task(self._run_sensor(sensor), name=f"sensor-{sensor.name}")
            for sensor in self.config.sensors
        ]
        sender = asyncio.create_task(self._send_forever(), name="sender")
        try:
            await stop.wait()
        finally:
            for task in sensor_tasks:
                task.cancel()
            await asyncio.gather(*sensor_tasks, return_exceptions=True)
            await self._flush(FLUSH_TIMEOUT)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            self._executor.shutdown(wait=False, cancel_futures=True)
            log.info(
                "lagent stopped: %d samples sent, %d dropped, %d not sent at shutdown",
                self.sent,
                self.queue.dropped,
                len(self.queue),
            )

    async def _flush(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.queue) and self.connected.is_set() and loop.time() < deadline:
            await asyncio.sleep(0.05)

    # -- sensors ---------------------------------------------------------

    async def _run_sensor(self, config: SensorConfig) -> None:
        loop = asyncio.get_running_loop()
        sensor = REGISTRY[config.name](config.settings)
        errors = RateLimitedLog(log, period=600.0)
        try:
            await loop.run_in_executor(self._executor, sensor.start)
        except Exception as error:  # a sensor must not take the agent down
            log.error("sensor %s failed to start: %s", config.name, error)
            return
        log.info("sensor %s started, every %g s", config.name, config.interval)
        origin = loop.time()
        tick = 0
        while True:
            try:
                value = await loop.run_in_executor(self._executor, sensor.measure)
            except SensorUnsupported as reason:
                log.warning("sensor %s is not supported on this host (%s); it stays idle", config.name, reason)
                return
            except Exception as error:
                errors.log(
                    logging.ERROR, "measure", "sensor %s failed: %s: %s", config.name, type(error).__name__, error
                )
            else:
                self.queue.put(
                    {"host": self.config.hostname, "sensor": config.name, "time": time.time(), "value": value}
                )
            tick = next_tick(origin, config.interval, loop.time(), tick)
            await asyncio.sleep(origin + tick * config.interval - loop.time())

    # -- sending ---------------------------------------------------------

    async def _send_forever(self) -> None:
        backoff = Backoff()
        while True:
            try:
                reader, writer = await self._connect()
            except (OSError, asyncio.TimeoutError, protocol.ProtocolError, asyncio.IncompleteReadError) as error:
                self._connect_log.log(
                    logging.WARNING,
                    "connect",
                    "cannot reach lmaster %s (%s); %d samples queued, retrying",
                    self.master_address,
                    str(error) or type(error).__name__,
                    len(self.queue),
                )
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._connect_log = RateLimitedLog(log, period=300.0)
            log.info("connected to lmaster %s (%d samples queued)", self.master_address, len(self.queue))
            self.connected.set()
            try:
                await self._stream(reader, writer)
            except (OSError, ConnectionError) as error:
                log.warning(
                    "lost connection to lmaster %s: %s; %d samples queued", self.master_address, error, len(self.queue)
                )
            finally:
                self.connected.clear()
                writer.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.config.master_host, self.config.master_port), CONNECT_TIMEOUT
        )
        try:
            writer.write(protocol.hello(self.config.hostname, f"lagent {__version__}"))
            header = await asyncio.wait_for(reader.readexactly(protocol.HEADER_SIZE), WELCOME_TIMEOUT)
            body = await asyncio.wait_for(reader.readexactly(protocol.frame_length(header)), WELCOME_TIMEOUT)
            kind, payload = protocol.split_frame(body)
            welcome = protocol.decode_json(payload)
            if kind != protocol.WELCOME or "error" in welcome:
                raise protocol.ProtocolError(f"lmaster refused: {welcome.get('error', kind)}")
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        closed_by_master = asyncio.ensure_future(reader.read(1))
        try:
            while True:
                if not len(self.queue):
                    nonempty = asyncio.ensure_future(self.queue.nonempty.wait())
                    await asyncio.wait({nonempty, closed_by_master}, return_when=asyncio.FIRST_COMPLETED)
                    nonempty.cancel()
                    if closed_by_master.done():
                        raise ConnectionError("connection closed by lmaster")
                    await asyncio.sleep(COALESCE_DELAY)
                batch = self.queue.take(MAX_SAMPLES_PER_FRAME)
                try:
                    for frame in encode_batches(batch):
                        writer.write(frame)
                        await writer.drain()
                except BaseException:
                    self.queue.put_back(batch)
                    raise
                self.sent += len(batch)
        finally:
            closed_by_master.cancel()


def next_tick(origin: float, interval: float, now: float, tick: int) -> int:
    """The next grid point after ``now``; ticks missed (suspend, overload) are skipped."""
    due = tick + 1
    if origin + due * interval < now:
        skipped = math.floor((now - origin) / interval) + 1 - due
        log.debug("%d ticks skipped (measurement slower than its interval)", skipped)
        due += skipped
    return due


def encode_batches(samples: list[dict]) -> list[bytes]:
    """``S`` frames for the samples, split in halves until each fits the cap."""
    try:
        return [protocol.encode_samples(samples)]
    except ValueError:
        if len(samples) == 1:
            log.error("sample of sensor %s too large for one frame; dropped", samples[0].get("sensor"))
            return []
        middle = len(samples) // 2
        return encode_batches(samples[:middle]) + encode_batches(samples[middle:])
