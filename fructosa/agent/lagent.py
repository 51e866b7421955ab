"""The lagent daemon: its parts put together, and their run/reload lifecycle.

Each measurement is flattened to Graphite datapoints once, here: the samples
of one tick whose shape did not change go into one block together (from their
sensors' remembered layouts, :mod:`.layouts`), any other into a one-sample
block of its own, and those blocks serve everything after: the adaptive plan,
the journal and the batches sent to lmaster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import IO, TYPE_CHECKING

from .. import __version__
from ..adaptive import AdaptivePlan
from ..cancelling import cancel_until_done
from ..config import AgentConfig, SensorConfig
from ..config.record import replace
from ..graphite_paths import SampleError, sample_to_datapoints
from ..heap import give_back_free_heap
from ..ratelog import RateLimitedLog
from ..spool import Spool
from ..wire import auth
from ..wire.blocks import Block
from .layouts import LayoutCache, plain
from .queue import SampleQueue
from .report import Reporter
from .scheduler import SensorScheduler
from .sender import Sender

if TYPE_CHECKING:
    import ssl  # named only: lagent without TLS keeps ssl out (wire.auth.keep_openssl_out)

log = logging.getLogger(__package__)

FLUSH_TIMEOUT = 5.0
"""Seconds a stopping agent gives queued and in-flight batches to be acknowledged."""
TLS_NEEDS_RESTART = (
    "reload: TLS (to lmaster, or to an https:// exporter) takes effect at the next restart: lagent started "
    "without TLS, so OpenSSL is not loaded; the link to lmaster stays plaintext until then"
)
SETTLE_TIMEOUT = 30.0
"""Seconds after start at most until start-up's freed heap is given back, connected to lmaster or not."""


class Agent:
    """lagent: the sensors (:class:`SensorScheduler`) record into the queue, the
    :class:`Sender` streams it to lmaster, the :class:`Reporter` watches it all."""

    def __init__(
        self,
        config: AgentConfig,
        spool: Spool | None = None,
        tls: ssl.SSLContext | None = None,
        status_file: str | None = None,
    ) -> None:
        self.config = config
        self.counters = {"samples": 0}
        self.queue: SampleQueue[Block] = SampleQueue(config.max_queued_samples)
        self.layouts = LayoutCache()
        self.plan = AdaptivePlan(config.sensors)
        self.sender = Sender(config, self.queue, spool, tls, self.plan.intervals)
        self._taken: list[tuple[str, object]] = []
        """Samples taken and not queued yet: those of the tick under way."""
        self._taken_at = 0.0
        """When the first of them was taken."""
        self._sample_errors = RateLimitedLog(log, period=600.0)
        self._gpu = _has_gpu(config)
        """A GPU sensor is configured: its samples may bring NVML's news of the GPUs (see :meth:`queue_taken`)."""
        # The tick's end (``recorded``) is queue_taken itself, sending: no frame of a method in between.
        self.scheduler = SensorScheduler(self.plan, self.take, partial(self.queue_taken, True), self.take_all)
        self.reporter = Reporter(self, status_file)
        self._journal: IO[str] | None = None

    @property
    def spool(self) -> Spool | None:
        return self.sender.spool

    @property
    def connected(self) -> asyncio.Event:
        return self.sender.session.connected

    @property
    def dropped_samples(self) -> int:
        return self.queue.dropped + (self.spool.dropped if self.spool else 0)

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "lagent %s as host %r, sending to lmaster %s%s, %d sensors",
            __version__, self.config.hostname, self.sender.address, " over TLS" if self.sender.tls else "",
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
        self.scheduler.apply(self.config.sensors)
        helpers = [
            asyncio.create_task(self.sender.session.run(), name="sender"),
            asyncio.create_task(self.reporter.run(), name="reporter"),
            asyncio.create_task(self._settle(), name="settle"),
        ]
        try:
            await stop.wait()
        finally:
            await self.scheduler.stop()
            await self.sender.flush(FLUSH_TIMEOUT)
            await cancel_until_done(helpers)  # a reconnect's wait_for can lose one cancel (Python < 3.12)
            self.scheduler.shutdown()
            self.sender.cancel_spill()
            self.sender.persist()
            if self._journal:
                self._journal.close()
            session = self.sender.session
            log.info(
                "lagent stopped: %d samples measured, %d batches sent, %d acknowledged, %d spooled, "
                "%d samples dropped",
                self.counters["samples"], session.sent, session.acknowledged, self.sender.spooled,
                self.dropped_samples,
            )  # fmt: skip

    async def _settle(self) -> None:
        """Once the sensors are built and the first connection is made (or
        :data:`SETTLE_TIMEOUT` passed), give start-up's freed heap back: one call, no wakeup later."""
        try:
            await asyncio.wait_for(self.connected.wait(), SETTLE_TIMEOUT)
        except asyncio.TimeoutError:
            pass
        give_back_free_heap()

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
        link = new.link
        if auth.openssl_blocked() and auth.wants_openssl(link, new.sensors):
            log.warning(TLS_NEEDS_RESTART)
            was = old.link  # TLS to lmaster stays off; a new secret still applies
            link = replace(link, tls=was.tls, tls_cert=was.tls_cert, tls_key=was.tls_key, tls_ca=was.tls_ca)
        self.config = replace(new, spool=old.spool, journal_file=old.journal_file, link=link)
        self._gpu = _has_gpu(self.config)
        self.plan.update(new.sensors)
        self.scheduler.apply(new.sensors)
        self.sender.reconfigure(self.config)
        self.sender.note_facts()
        give_back_free_heap()

    def current_interval(self, sensor: SensorConfig) -> float:
        """The interval ``sensor`` runs at now (its fast one while adaptive sampling says so)."""
        return self.plan.interval(sensor)

    def self_metrics(self, samples_per_second: float) -> dict:
        return self.reporter.self_metrics(samples_per_second)

    def record(self, sensor: str, value: object) -> None:
        """One measurement of ``sensor``, taken now: queued at once (with any the tick left), and the sender woken."""
        self.take(sensor, value)
        self.queue_taken()
        self.sender.wake()

    def take(self, sensor: str, value: object) -> None:
        """One measurement of ``sensor``, taken now, held until :meth:`queue_taken`: the
        scheduler hands over every sample of a tick, then calls :meth:`queue_taken` to send them. They
        are all stamped with the time the first was taken: the tick's (not the time the loop
        stopped waiting for a lane)."""
        if not self._taken:
            self._taken_at = time.time()
        self._taken.append((sensor, value))

    def take_all(self, samples: list[tuple[str, object]]) -> None:
        """:meth:`take` of each of ``samples``, in order, in one call: the scheduler hands over the
        samples it measured on the loop at one tick so (the list becomes the agent's). Stamped when
        handed over, unless samples were taken before them."""
        if self._taken:
            self._taken += samples
        else:
            self._taken = samples
            self._taken_at = time.time()

    def queue_taken(self, send: bool = False) -> None:
        """Queue the samples taken since the last call, flattened once: those of the same
        shape as before in one block (:meth:`LayoutCache.tick_block`), any other one
        by one. The block serves everything after: the batches sent to lmaster, the
        adaptive plan and the journal (whose samples go one by one, to read their own
        datapoints). With ``send`` (the samples of one tick, or of a late lane, are all taken),
        they then go to lmaster: a tick block that holds them all is handed to the sender
        itself (:meth:`Sender.send_tick`: straight into its frame when nothing waits before it)."""
        taken, self._taken = self._taken, []
        if not taken:
            if send:
                self.sender.send_now()
            return
        self.counters["samples"] += len(taken)
        host, now = self.config.hostname, self._taken_at
        one_by_one = taken
        if self._journal is None:
            plan = self.plan
            watching = bool(plan.schedules)  # no adaptive sensor: no condition reads any sample
            tick, one_by_one = self.layouts.tick_block(
                host, now, [sample for sample in taken if not plan.watches(sample[0])] if watching else taken
            )
            if watching:
                one_by_one += [sample for sample in taken if plan.watches(sample[0])]
            if tick is not None:
                if send and not one_by_one:  # the steady state: the tick's one block
                    if plan.schedules or (self._gpu and any(sensor == "GPU" for sensor, _ in taken)):
                        self.sender.note_facts()  # as below, before the block goes
                    self.sender.send_tick(tick)
                    return
                self.queue.put(tick, tick.samples)
        for sensor, value in one_by_one:
            try:
                self._queue_one(host, now, sensor, value)
            except Exception as error:  # one bad sample must not keep the others from lmaster
                self._sample_errors.log(logging.ERROR, sensor, "sample of sensor %s not queued: %s: %s",
                                        sensor, type(error).__name__, error)  # fmt: skip
        if self.plan.schedules or (self._gpu and any(sensor == "GPU" for sensor, _ in taken)):
            self.sender.note_facts()  # an interval may have changed; NVML may know the GPUs now
        if send:
            self.sender.send_now()

    def _queue_one(self, host: str, now: float, sensor: str, value: object) -> None:
        """One sample in a block of its own: queued for lmaster, shown to the adaptive plan and journaled."""
        block = self.layouts.block(host, sensor, now, value)
        if block is None:
            sample = {"host": host, "sensor": sensor, "time": now, "value": plain(value)}
            try:
                datapoints = sample_to_datapoints(sample)
            except SampleError as error:
                log.error("sample of sensor %s dropped: %s", sensor, error)
                return
            block = self.layouts.learn(host, sensor, value, datapoints)
        self.queue.put(block)
        if self.plan.watches(sensor):
            for name in self.plan.observe(sensor, block.datapoints(), asyncio.get_running_loop().time()):
                self.scheduler.wake(name)
        if self._journal is not None:  # debug option: what was measured, for loss checks
            self._journal.writelines(f"{path} {number!r} {when!r}\n" for path, (when, number) in block.datapoints())


def _has_gpu(config: AgentConfig) -> bool:
    return any(sensor.name == "GPU" for sensor in config.sensors)
