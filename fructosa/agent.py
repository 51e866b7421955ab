"""lagent: runs the configured sensors and streams their samples to lmaster.

Each sensor is a coroutine on its own fixed grid of the monotonic clock
(``start + k·interval``), so intervals do not drift by the time a
measurement takes; psutil calls run in worker threads so a slow one (a hung
NFS mount under DiskUsage) stalls only its own sensor.

Delivery is at-least-once. Samples are sent in numbered batches and kept
until lmaster acknowledges them (it does so once they are safe on its side).
While lmaster is unreachable, batches go to a disk spool that survives a
restart of the agent; when lmaster is back, live samples go first and the
backlog drains in between, oldest first. Without a usable spool the agent
buffers in memory only. Every drop is counted and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import ssl
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import IO

from . import __version__
from .adaptive import AdaptiveSchedule, next_due
from .backoff import Backoff
from .config import AgentConfig, SensorConfig
from .daemon import write_status
from .graphite_paths import Datapoint, SampleError, sample_to_datapoints
from .ratelog import RateLimitedLog
from .selfstats import ProcessUsage
from .sensors import REGISTRY, SensorUnsupported
from .spool import Spool
from .wire import auth, protocol
from .wire.blocks import Block, split_for_frames
from .wire.session import open_session, read_frame

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
MAX_SAMPLES_PER_BATCH = 1000
MAX_UNACKNOWLEDGED = 32
"""Batches in flight before the agent waits for acknowledgements."""
COALESCE_DELAY = 0.05
"""Seconds the sender waits after a wake-up so samples due at the same
instant travel in one batch."""
SPILL_INTERVAL = 1.0
"""While lmaster is away, queued samples go to the spool this often, so a
killed agent loses at most this much."""
SPILL_THRESHOLD = 5000
"""Samples queued in memory beyond which they go to the spool even while connected."""
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
                logging.WARNING, "full",
                "sample queue full (%d samples, lmaster unreachable and no spool?): "
                "dropping the oldest; %d dropped in total",
                self.max_samples, self.dropped,
            )  # fmt: skip
        self.nonempty.set()

    def take(self, limit: int) -> list[dict]:
        count = min(limit, len(self._samples))
        batch = [self._samples.popleft() for _ in range(count)]
        if not self._samples:
            self.nonempty.clear()
        return batch


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        spool: Spool | None = None,
        tls: ssl.SSLContext | None = None,
        status_file: str | None = None,
    ) -> None:
        self.config = config
        self.spool = spool
        self.tls = tls
        self.status_file = status_file
        self._sensor_tasks: dict[str, tuple[SensorConfig, asyncio.Task]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._usage = ProcessUsage()
        self._reconnects = 0
        self.queue = SampleQueue(config.max_queued_samples)
        self.session = os.urandom(16)
        self._next_sequence = 1
        # batch id → (frame body, spool record id or None for a live batch)
        self.unacknowledged: OrderedDict[bytes, tuple[bytes, tuple[int, int] | None]] = OrderedDict()
        self._ready: deque[bytes] = deque()  # live batches encoded, not yet sent
        self._window_open = asyncio.Event()
        self.connected = asyncio.Event()
        self.counters = {"batches_sent": 0, "batches_acked": 0, "batches_spooled": 0, "samples": 0}
        # Threads start only when needed; one per sensor at most, so a hung one blocks only itself.
        self._executor = ThreadPoolExecutor(max_workers=len(REGISTRY), thread_name_prefix="sensor")
        self._connect_log = RateLimitedLog(log, period=300.0)
        self._journal: IO[str] | None = None
        # adaptive sampling: schedules of sensors with 'fast when', the metrics their
        # conditions read (per measured sensor) and the latest value of each such metric
        self._adaptive: dict[str, AdaptiveSchedule] = {}
        self._watched: dict[str, frozenset[str]] = {}
        self._latest: dict[str, float] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._missing_warned: set[str] = set()

    @property
    def master_address(self) -> str:
        return f"{self.config.master_host}:{self.config.master_port}"

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "lagent %s as host %r, sending to lmaster %s%s, %d sensors",
            __version__, self.config.hostname, self.master_address, " over TLS" if self.tls else "",
            len(self.config.sensors),
        )  # fmt: skip
        if self.config.link.secret is None:
            log.warning("no secret file configured: lmaster cannot tell this agent from an impostor")
        if self.spool is not None:
            log.info("spool %s: %d batches waiting from earlier runs", self.spool.directory, len(self.spool))
        if self.config.journal_file:
            self._journal = open(self.config.journal_file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        if not self.config.sensors:
            log.warning("no [sensor:NAME] section in %s: nothing to measure", self.config.path)
        self._plan_adaptive()
        for sensor in self.config.sensors:
            self._start_sensor(sensor)
        helpers = [
            asyncio.create_task(self._send_forever(), name="sender"),
            asyncio.create_task(self._report_forever(), name="reporter"),
        ]
        if self.spool is not None:
            helpers.append(asyncio.create_task(self._spill_forever(), name="spiller"))
        try:
            await stop.wait()
        finally:
            sensor_tasks = [task for _, task in self._sensor_tasks.values()]
            for task in sensor_tasks:
                task.cancel()
            await asyncio.gather(*sensor_tasks, return_exceptions=True)
            await self._flush(FLUSH_TIMEOUT)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._persist()
            if self._journal:
                self._journal.close()
            log.info(
                "lagent stopped: %d samples measured, %d batches sent, %d acknowledged, %d spooled, "
                "%d samples dropped",
                self.counters["samples"], self.counters["batches_sent"], self.counters["batches_acked"],
                self.counters["batches_spooled"], self.queue.dropped + (self.spool.dropped if self.spool else 0),
            )  # fmt: skip

    async def _flush(self, timeout: float) -> None:
        """On shutdown: give queued and unacknowledged batches a chance to land."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (
            (len(self.queue) or self._ready or self.unacknowledged)
            and self.connected.is_set()
            and loop.time() < deadline
        ):
            await asyncio.sleep(0.05)

    def _persist(self) -> None:
        """Whatever is not acknowledged goes to the spool (or is counted lost)."""
        live = [body for body, record in self.unacknowledged.values() if record is None]
        live.extend(self._ready)
        self._ready.clear()
        self.unacknowledged.clear()
        if self.spool is None:
            lost = len(live) + len(self.queue)
            if lost:
                log.warning("no spool: %d batches and %d samples not delivered at shutdown", len(live), len(self.queue))
            return
        for body in live:
            self._spool_body(body)
        self._spill()
        self.spool.close()

    # -- reload ------------------------------------------------------------

    def reload(self, new: AgentConfig) -> None:
        """Apply a new configuration: sensors added, removed and re-timed take
        effect at once; nothing queued, spooled or in flight is lost."""
        old = self.config
        for what, before, after in (
            ("spool", old.spool, new.spool),
            ("journal file", old.journal_file, new.journal_file),
            ("max queued samples", old.max_queued_samples, new.max_queued_samples),
        ):
            if before != after:
                log.warning("reload: a change of %s takes effect at the next restart", what)
        reconnect = (old.master_host, old.master_port, old.link) != (new.master_host, new.master_port, new.link)
        self.config = replace(new, spool=old.spool, journal_file=old.journal_file)
        wanted = {sensor.name: sensor for sensor in new.sensors}
        for name, (running, task) in list(self._sensor_tasks.items()):
            if wanted.get(name) != running:
                task.cancel()
                del self._sensor_tasks[name]
                if name not in wanted:
                    log.info("reload: sensor %s removed", name)
        self._plan_adaptive()
        for name, sensor in wanted.items():
            if name not in self._sensor_tasks:
                self._start_sensor(sensor)
        if reconnect:
            self.tls = auth.client_context_for(new.link)
            log.info("reload: lmaster address or security changed: reconnecting to %s", self.master_address)
            if self._writer is not None:
                self._writer.close()

    # -- sensors ---------------------------------------------------------

    def _plan_adaptive(self) -> None:
        """(Re)build the adaptive schedules from the configuration; a sensor whose
        settings did not change keeps its current fast/slow state across a reload."""
        schedules = {}
        for sensor in self.config.sensors:
            if sensor.fast is None:
                continue
            current = self._adaptive.get(sensor.name)
            if current is not None and (current.slow, current.fast) == (sensor.interval, sensor.fast):
                schedules[sensor.name] = current
            else:
                schedules[sensor.name] = AdaptiveSchedule(sensor.interval, sensor.fast)
        self._adaptive = schedules
        watched: dict[str, set[str]] = {}
        for schedule in schedules.values():
            for metric in schedule.fast.when.metrics:
                watched.setdefault(metric.split(".", 1)[0], set()).add(metric)
        self._watched = {name: frozenset(metrics) for name, metrics in watched.items()}
        self._latest = {metric: value for metric, value in self._latest.items()
                        if metric.split(".", 1)[0] in self._watched}  # fmt: skip

    def _adapt(self, sample: dict) -> None:
        """Note the watched metrics of ``sample`` and switch the schedules depending on them."""
        watched = self._watched.get(sample["sensor"])
        if not watched:
            return
        try:
            datapoints = sample_to_datapoints(sample)
        except SampleError:
            return
        for path, (_, value) in datapoints:
            metric = path.split(".", 1)[1]
            if metric in watched and isinstance(value, (int, float)):
                self._latest[metric] = float(value)
        for metric in sorted(watched - self._latest.keys() - self._missing_warned):
            self._missing_warned.add(metric)  # once: the sensor's paths rarely change
            log.warning("%s has no metric %s: 'fast when' conditions on it never hold", sample["sensor"], metric)
        now = asyncio.get_running_loop().time()
        for name, schedule in self._adaptive.items():
            if not (schedule.fast.when.metrics & watched):
                continue
            holds, reason = schedule.fast.when.evaluate(self._latest)
            if schedule.observe(holds, now):
                self._interval_changed(name, schedule, reason)

    def _silence_limit(self, schedule: AdaptiveSchedule) -> float:
        """How long without a verdict before a fast sensor slows down: the hold plus
        three intervals of the slowest sensor its condition reads."""
        intervals = [
            self.current_interval(sensor)
            for sensor, _ in self._sensor_tasks.values()
            if any(metric.split(".", 1)[0] == sensor.name for metric in schedule.fast.when.metrics)
        ]
        return schedule.fast.hold + 3 * max(intervals, default=schedule.slow)

    def _interval_changed(self, name: str, schedule: AdaptiveSchedule, reason: str) -> None:
        if schedule.is_fast:
            log.info("%s: fast sampling (%g s) because %s", name, schedule.interval, reason)
        else:
            log.info("%s: back to %g s after %g s hold (%s)", name, schedule.interval, schedule.fast.hold, reason)
        wakeup = self._wakeups.get(name)
        if wakeup is not None:
            wakeup.set()  # take the new interval now, not after the rest of the old wait

    def current_interval(self, config: SensorConfig) -> float:
        """The interval ``config``'s sensor runs at now (its fast one while adaptive sampling says so)."""
        schedule = self._adaptive.get(config.name)
        return schedule.interval if schedule is not None else config.interval

    def _start_sensor(self, sensor: SensorConfig) -> None:
        task = asyncio.create_task(self._run_sensor(sensor), name=f"sensor-{sensor.name}")
        self._sensor_tasks[sensor.name] = (sensor, task)

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
        wakeup = self._wakeups[config.name] = asyncio.Event()
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
                if value is not None:  # None: no sample this time (a rate's first reading)
                    self._record(
                        {"host": self.config.hostname, "sensor": config.name, "time": time.time(), "value": value}
                    )
            while True:  # sleep to the next grid point of the current interval
                schedule = self._adaptive.get(config.name)
                # slows down also when the sensor its condition reads has fallen silent
                if schedule is not None and schedule.expire(loop.time(), self._silence_limit(schedule)):
                    self._interval_changed(config.name, schedule, "no fresh value")
                wakeup.clear()
                due = next_due(origin, self.current_interval(config), loop.time())
                try:
                    await asyncio.wait_for(wakeup.wait(), max(0.0, due - loop.time()))
                except TimeoutError:
                    break

    def _record(self, sample: dict) -> None:
        self.counters["samples"] += 1
        self.queue.put(sample)
        if sample["sensor"] in self._watched:
            self._adapt(sample)
        if self._journal is not None:  # debug option: what was measured, for loss checks
            lines = (f"{path} {value!r} {when!r}\n" for path, (when, value) in sample_to_datapoints(sample))
            self._journal.writelines(lines)

    # -- self-metrics and status -------------------------------------------

    async def _report_forever(self) -> None:
        previous_samples, previous_time = self.counters["samples"], time.monotonic()
        while True:
            await asyncio.sleep(self.config.self_metrics_interval)
            now = time.monotonic()
            rate = (self.counters["samples"] - previous_samples) / (now - previous_time)
            previous_samples, previous_time = self.counters["samples"], now
            try:
                metrics = self.self_metrics(rate)
            except Exception as error:  # reporting must never stop measuring
                log.error("self-metrics failed: %s: %s", type(error).__name__, error)
                continue
            if self.config.self_metrics:
                self._record({"host": self.config.hostname, "sensor": "fructosa", "time": time.time(),
                              "value": {"agent": metrics}})  # fmt: skip
            if self.status_file:
                try:
                    write_status(self.status_file, {"agent": metrics, "report": _agent_report(self, metrics)})
                except OSError as error:
                    log.debug("cannot write status file %s: %s", self.status_file, error)

    def self_metrics(self, samples_per_second: float) -> dict:
        """The agent's health: ``HOST.fructosa.agent.*`` in Graphite."""
        usage = self._usage.sample()
        return {
            "samples_per_second": round(samples_per_second, 3),
            "queued_samples": len(self.queue),
            "unacknowledged_batches": len(self.unacknowledged),
            "spool_batches": len(self.spool) if self.spool else 0,
            "spool_bytes": self.spool.bytes if self.spool else 0,
            "dropped_samples": self.queue.dropped + (self.spool.dropped if self.spool else 0),
            "batches_sent": self.counters["batches_sent"],
            "reconnects": self._reconnects,
            "connected": self.connected.is_set(),
            "cpu_percent": usage["cpu_percent"],
            "rss_bytes": usage["rss_bytes"],
            "interval": {name: self.current_interval(sensor) for name, (sensor, _) in self._sensor_tasks.items()},
        }

    # -- batches and the spool -------------------------------------------

    def _new_batches(self, limit: int) -> list[bytes]:
        """Frame bodies (batch id + block) for up to ``limit`` queued samples."""
        bodies = []
        for frame in encode_batches(self.queue.take(limit), self.session, self._next_sequence):
            bodies.append(frame[protocol.HEADER_SIZE + 1 :])
            self._next_sequence += 1
        return bodies

    def _spool_body(self, body: bytes) -> None:
        assert self.spool is not None
        self.spool.append(body)
        self.counters["batches_spooled"] += 1

    def _spill(self) -> None:
        while self._ready:
            self._spool_body(self._ready.popleft())
        while len(self.queue):
            for body in self._new_batches(MAX_SAMPLES_PER_BATCH):
                self._spool_body(body)

    async def _spill_forever(self) -> None:
        """Move queued samples to the spool while lmaster is away (or slow)."""
        while True:
            await asyncio.sleep(SPILL_INTERVAL)
            if not self.connected.is_set() or len(self.queue) > SPILL_THRESHOLD:
                self._spill()

    def _acknowledged(self, batch_id: bytes) -> None:
        entry = self.unacknowledged.pop(batch_id, None)
        if entry is None:
            return
        self.counters["batches_acked"] += 1
        if entry[1] is not None and self.spool is not None:
            self.spool.ack(entry[1])
        self._window_open.set()

    def _connection_lost(self) -> None:
        """Unacknowledged live batches go to the spool (or wait in memory);
        spooled ones will be read again."""
        if self.spool is None:
            return  # kept in self.unacknowledged and sent again after reconnecting
        for batch_id, (body, record) in list(self.unacknowledged.items()):
            if record is None:
                self._spool_body(body)
            del self.unacknowledged[batch_id]
        self.spool.rewind()
        self._spill()

    # -- sending ---------------------------------------------------------

    async def _send_forever(self) -> None:
        backoff = Backoff()
        while True:
            try:
                reader, writer = await self._connect()
            except (OSError, asyncio.TimeoutError, protocol.ProtocolError, asyncio.IncompleteReadError) as error:
                self._connect_log.log(
                    logging.WARNING, "connect", "cannot reach lmaster %s (%s); %d samples queued, %d batches spooled",
                    self.master_address, describe_error(error), len(self.queue), len(self.spool or ()),
                )  # fmt: skip
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._connect_log = RateLimitedLog(log, period=300.0)
            log.info(
                "connected to lmaster %s (%d samples queued, %d batches spooled)",
                self.master_address, len(self.queue), len(self.spool or ()),
            )  # fmt: skip
            self.connected.set()
            self._reconnects += 1
            self._writer = writer
            try:
                await self._stream(reader, writer)
            except (OSError, ConnectionError, protocol.ProtocolError, asyncio.IncompleteReadError) as error:
                log.warning("lost connection to lmaster %s: %s", self.master_address, describe_error(error))
            finally:
                self.connected.clear()
                self._writer = None
                writer.close()
                self._connection_lost()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.config.master_host, self.config.master_port
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=self.tls, server_hostname=host if self.tls else None),
            CONNECT_TIMEOUT,
        )
        try:
            hello = {"agent": f"lagent {__version__}", "heartbeat": self.config.heartbeat_interval}
            await open_session(reader, writer, self.config.hostname, self.config.link.secret, hello)
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        acks = asyncio.ensure_future(self._read_acks(reader))
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        try:
            for body, _ in list(self.unacknowledged.values()):  # no spool: resend what was in flight
                writer.write(protocol.encode_frame(protocol.DATAPOINTS, body))
            while True:
                body, record = self._next_body()
                if body is None:
                    await self._wait_for_work(acks, last_sent + self.config.heartbeat_interval - loop.time())
                    if acks.done():
                        acks.result()  # raises why the master went away
                        raise ConnectionError("connection closed by lmaster")
                    if loop.time() - last_sent >= self.config.heartbeat_interval:
                        backlog = {"queued": len(self.queue), "spooled": len(self.spool or ())}
                        writer.write(protocol.encode_frame(protocol.HEARTBEAT, json.dumps(backlog).encode()))
                        await writer.drain()
                        last_sent = loop.time()
                    continue
                self.unacknowledged[body[: protocol.BATCH_ID_SIZE]] = (body, record)
                writer.write(protocol.encode_frame(protocol.DATAPOINTS, body))
                await writer.drain()
                self.counters["batches_sent"] += 1
                last_sent = loop.time()
        finally:
            acks.cancel()

    def _next_body(self) -> tuple[bytes | None, tuple[int, int] | None]:
        """The next batch to send: live samples first, then the spooled backlog."""
        if len(self.unacknowledged) >= MAX_UNACKNOWLEDGED:
            return None, None
        if not self._ready and len(self.queue):
            self._ready.extend(self._new_batches(MAX_SAMPLES_PER_BATCH))
        if self._ready:
            return self._ready.popleft(), None
        if self.spool is not None and self.spool.unread():
            record = self.spool.read_next()
            if record is not None:
                record_id, body = record
                return body, record_id
        return None, None

    async def _wait_for_work(self, acks: asyncio.Future, timeout: float) -> None:
        self._window_open.clear()
        waiters = [asyncio.ensure_future(self._window_open.wait())]
        if len(self.unacknowledged) < MAX_UNACKNOWLEDGED:
            waiters.append(asyncio.ensure_future(self.queue.nonempty.wait()))
        await asyncio.wait([*waiters, acks], timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if len(self.queue) and not acks.done():
            await asyncio.sleep(COALESCE_DELAY)

    async def _read_acks(self, reader: asyncio.StreamReader) -> None:
        while True:
            kind, payload = await read_frame(reader)
            if kind != protocol.ACK:
                raise protocol.ProtocolError(f"unexpected frame {kind!r} from lmaster")
            for batch_id in protocol.decode_acks(payload):
                self._acknowledged(batch_id)


def _agent_report(agent: Agent, metrics: dict) -> str:
    connected = "connected to" if metrics["connected"] else "NOT connected to"
    return (
        f"host {agent.config.hostname}, {connected} lmaster {agent.master_address}; "
        f"{len(agent._sensor_tasks)} sensors, {metrics['samples_per_second']:.2f} samples/s, "
        f"{metrics['queued_samples']} queued, {metrics['unacknowledged_batches']} unacknowledged, "
        f"{metrics['spool_batches']} spooled ({metrics['spool_bytes']} bytes), "
        f"{metrics['dropped_samples']} dropped, CPU {metrics['cpu_percent']:.1f} %, "
        f"RSS {metrics['rss_bytes'] / 1e6:.1f} MB"
    )


def describe_error(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate of lmaster not trusted: {error.verify_message}"
    if isinstance(error, asyncio.IncompleteReadError):
        return "connection closed by lmaster during the handshake (wrong secret or TLS settings?)"
    return str(error) or type(error).__name__


def next_tick(origin: float, interval: float, now: float, tick: int) -> int:
    """The next grid point after ``now``; ticks missed (suspend, overload) are skipped."""
    due = tick + 1
    if origin + due * interval < now:
        skipped = math.floor((now - origin) / interval) + 1 - due
        log.debug("%d ticks skipped (measurement slower than its interval)", skipped)
        due += skipped
    return due


def encode_batches(samples: list[dict], session: bytes, first_sequence: int) -> list[bytes]:
    """``D`` frames for the samples: flattened here, so lmaster only checks and
    forwards, split so that each block fits the frame cap."""
    datapoints: list[Datapoint] = []
    flattened = 0
    for sample in samples:
        try:
            sample_to_datapoints(sample, out=datapoints)
            flattened += 1
        except SampleError as error:
            log.error("sample of sensor %s dropped: %s", sample.get("sensor"), error)
    room = protocol.MAX_FRAME - 1 - protocol.BATCH_ID_SIZE
    frames = []
    for index, chunk in enumerate(split_for_frames(datapoints, room)):
        block = Block.of(chunk, samples=flattened if index == 0 else 0)
        frames.append(
            protocol.encode_frame(
                protocol.DATAPOINTS, protocol.batch_id(session, first_sequence + index) + block.encode()
            )
        )
    return frames
