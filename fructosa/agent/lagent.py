"""The lagent daemon: its parts put together, and their run/reload lifecycle.

Each measurement is flattened to Graphite datapoints once, here, into a
one-sample block (from the sensor's remembered layout when its shape did not
change, :mod:`.layouts`), and that block serves everything after: the
adaptive plan, the journal and the batches sent to lmaster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import IO, TYPE_CHECKING

from .. import __version__
from ..adaptive import AdaptivePlan
from ..cancelling import cancel_until_done
from ..config import AgentConfig, SensorConfig
from ..graphite_paths import SampleError, sample_to_datapoints
from ..heap import give_back_free_heap
from ..spool import Spool
from ..wire import auth
from ..wire.blocks import Block
from .layouts import LayoutCache
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
        self.scheduler = SensorScheduler(self.plan, self.take, self.sender.send_now)
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
        """One measurement of ``sensor``, taken now: :meth:`take` it, and wake the sender."""
        self.take(sensor, value)
        self.sender.wake()

    def take(self, sensor: str, value: object) -> None:
        """One measurement of ``sensor``, taken now: flattened once, then queued for
        lmaster, shown to the adaptive plan and journaled. The sender is not woken: the
        scheduler wakes it once the samples of a tick are all queued."""
        self.counters["samples"] += 1
        host, now = self.config.hostname, time.time()
        block = self.layouts.block(host, sensor, now, value)
        if block is None:
            sample = {"host": host, "sensor": sensor, "time": now, "value": value}
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
        if self.plan.schedules or sensor == "GPU":  # an interval may have changed; NVML may know the GPUs now
            self.sender.note_facts()
        if self._journal is not None:  # debug option: what was measured, for loss checks
            self._journal.writelines(f"{path} {number!r} {when!r}\n" for path, (when, number) in block.datapoints())
