"""lagent's sensors, all on one grid of the monotonic clock, measured tick by tick.

Every sensor measures at ``origin + k·interval`` with one ``origin`` for the
whole agent, so sensors whose intervals share a multiple fall due at the same
instants, and everything due at one instant is measured in one wakeup: the
agent costs a node one wakeup per tick, not one per sensor (nor one per
thread hop). Intervals do not drift by the time a measurement takes; a
measurement slower than its interval skips the grid points it missed instead
of piling up work. The interval is the adaptive plan's current one, taken at
once when the plan switches it.

A sensor that only reads kernel counters (``Sensor.blocking`` false: /proc,
/sys) is measured right on the event loop, in sequence with the others due
at that tick. Those that may block for long (DiskUsage on a hung NFS mount,
scontrol, an HTTP scrape, NVML, walking every process) never run on the
loop: the ones due at one tick are measured one after the other on one
worker thread (a :class:`~fructosa.agent.lanes.Lane`; one thread hop per tick), after those on
the loop, while the loop, with nothing else due before the next tick, waits
for them (no two threads fighting for the GIL). A watchdog gives a lane
:data:`LANE_PATIENCE` seconds: a sensor still measuring then keeps that
thread to itself, and the ones after it move on to another thread, so a
hung sensor stalls only itself. While it has not returned it is not started again, and it is
logged once it has been stuck for :data:`HUNG_AFTER` seconds. Threads start
only for such sensors; a sensor's one-off ``start()`` gets a passing thread
that ends with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Protocol

from ..adaptive import AdaptivePlan, next_due
from ..config import SensorConfig
from ..loop_clock import loop_clock
from ..ratelog import RateLimitedLog
from ..sensors import REGISTRY, Sensor, SensorUnsupported
from .lanes import LANE_PATIENCE, LaneRunner

if TYPE_CHECKING:
    from .lean_loop import TickSlot

log = logging.getLogger(__package__)

SAME_TICK = 0.001
"""Seconds within which grid points count as one tick (they differ only by rounding)."""
HUNG_AFTER = 60.0
"""Seconds a measurement on a worker thread may take before the watchdog logs it as hung."""


class ScheduledSensor:
    """One configured sensor: its instance, where it runs, and when it is next due."""

    __slots__ = ("config", "name", "interval", "sensor", "read", "on_thread", "due", "task", "busy_since",
                 "hung_logged", "errors")  # fmt: skip
    # Slots: a tick reads a few attributes of every entry, and at one tick a second they are not in
    # the CPU's caches; in the object itself, not in a dict of its own, they take fewer cache lines.

    def __init__(self, config: SensorConfig) -> None:
        self.config = config
        self.name = config.name
        self.interval = config.interval
        """The configured interval (the adaptive plan's current one may differ)."""
        self.sensor: Sensor | None = None
        self.read: Callable[[], object] = _not_started
        """The sensor's :meth:`~fructosa.sensors.Sensor.compact_reader`, once it started."""
        self.on_thread = True
        """Measured on a worker thread (it may block); decided once the sensor started."""
        self.due = math.inf
        """Loop time of the next measurement; infinite while starting, measuring on a thread, or idle."""
        self.task: asyncio.Task | None = None
        """Its start on a thread, while under way."""
        self.busy_since: float | None = None
        self.hung_logged = False
        self.errors = RateLimitedLog(log, period=600.0)


def _not_started() -> object:
    raise RuntimeError("measured before it started")


def watch(entry: ScheduledSensor, now: float) -> None:
    """The watchdog, at every tick: a measurement stuck on its thread is logged once."""
    assert entry.busy_since is not None
    if not entry.hung_logged and now - entry.busy_since >= HUNG_AFTER:
        entry.hung_logged = True
        log.warning(
            "sensor %s has not returned for %.0f s (hung? a dead network file system?); "
            "it is skipped until it does, the other sensors go on", entry.name, now - entry.busy_since,
        )  # fmt: skip


def failed(entry: ScheduledSensor, error: Exception) -> None:
    """``entry``'s measurement raised ``error``: logged (rate-limited); an unsupported sensor goes idle."""
    if isinstance(error, SensorUnsupported):
        log.warning("sensor %s is not supported on this host (%s); it stays idle", entry.name, error)
        entry.sensor = None
        entry.due = math.inf
        return
    entry.errors.log(logging.ERROR, "measure", "sensor %s failed: %s: %s", entry.name, type(error).__name__, error)


def drop(entry: ScheduledSensor) -> None:
    """Stop ``entry``: its start is cancelled; a measurement in a lane is left to finish, unrecorded."""
    entry.due = math.inf
    if entry.task is not None:
        entry.task.cancel()


def record_each(record: Callable[[str, object], None], errors: RateLimitedLog,
                samples: list[tuple[str, object]]) -> None:  # fmt: skip
    """A scheduler's ``record_all`` when none was given: ``record`` one sample after the other."""
    for name, value in samples:
        try:
            record(name, value)
        except Exception as error:  # one bad sample must not stop the ticks
            errors.log(logging.ERROR, name, "sample of sensor %s not recorded: %s: %s", name, type(error).__name__,
                       error)  # fmt: skip


async def start_on_thread(sensor: Sensor, name: str) -> Exception | None:
    """Run ``sensor.start()`` on a passing daemon thread and return what it raised, if anything.

    A start that hangs (a dead NFS mount, a stuck ``scontrol``) leaves only its thread behind."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Exception | None] = loop.create_future()

    def settle(error: Exception | None) -> None:
        if not done.done():
            done.set_result(error)

    def start() -> None:
        error = None
        try:
            sensor.start()
        except Exception as failure:
            error = failure
        try:
            loop.call_soon_threadsafe(settle, error)
        except RuntimeError:  # the loop closed meanwhile: the agent stopped
            pass

    threading.Thread(target=start, name=f"start-{name}", daemon=True).start()
    return await done


class Rider(Protocol):
    """Work on the sensors' grid that rides on their ticks (:attr:`SensorScheduler.riders`)."""

    due: float
    """Loop time of its next grid point: the ticks before it do not call :meth:`ride` (a tick a second
    with nothing to do for it costs no call)."""

    def ride(self, now: float) -> bool:
        """At a tick at loop time ``now``, on or after ``due``: do the work; whether it recorded a sample."""
        ...


class SensorScheduler:
    """Runs the configured sensors and hands each measurement to ``record(sensor name, value)``,
    or those measured on the loop at one tick all at once to ``record_all([(name, value), …])``.

    A sensor whose ``measure()`` returns None has nothing to report this time
    (a rate's first reading): nothing is recorded for it.
    """

    def __init__(
        self,
        plan: AdaptivePlan,
        record: Callable[[str, object], None],
        recorded: Callable[[], None] | None = None,
        record_all: Callable[[list[tuple[str, object]]], None] | None = None,
    ) -> None:
        self.plan = plan
        self.record = record
        self._record_errors = RateLimitedLog(log, period=600.0)
        self.record_all = record_all or partial(record_each, record, self._record_errors)
        """Takes the samples measured on the loop at one tick, in order, with one call (one function
        to fetch into cold caches once a second, not one call a sample); by default ``record`` each."""
        self.recorded = recorded
        """Called once after the samples of one tick (or of one lane) were recorded, if any were:
        whoever sends them is woken once per tick, not once per sample."""
        self.running: dict[str, tuple[SensorConfig, ScheduledSensor]] = {}
        self.origin: float | None = None
        """The loop time every sensor's grid starts from (set when the first sensor starts)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: Callable[[], float] = time.monotonic
        """The loop's clock: ``time.monotonic`` where the loop's ``time()`` is asyncio's (no method per read)."""
        self._slot: TickSlot | None = None
        """The next tick, armed for the earliest due time of all the sensors: the loop's tick slot where it
        offers one (no timer handle per tick), else ``_timer``. No task, no event: one loop turn per tick."""
        self._timer: asyncio.TimerHandle | None = None
        self._armed = math.inf
        """Loop time the next tick is armed for."""
        self._ticking = False
        self._stopped = False
        self._any_recorded = False
        self.riders: list[Rider] = []
        """Work riding on the ticks from its ``due`` on (the self-report), after the sensors, before sending."""
        self.lanes = LaneRunner(self._settle)

    def start(self, config: SensorConfig) -> None:
        """Start ``config``'s sensor and measure it at once (then on the grid)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._adopt(loop)
        if self.origin is None:
            self.origin = loop.time()
        self._stopped = False
        entry = ScheduledSensor(config)
        self.running[config.name] = (config, entry)
        try:
            entry.sensor = REGISTRY[config.name](config.settings)
        except Exception as error:  # a sensor must not take the agent down
            log.error("sensor %s failed to start: %s", config.name, error)
            return
        if type(entry.sensor).blocking:
            entry.task = asyncio.create_task(self._start_on_thread(entry), name=f"sensor-{config.name}")
        else:
            self._started(entry, entry.sensor.start)

    def apply(self, sensors: Iterable[SensorConfig]) -> None:
        """Run exactly ``sensors``: a removed or changed one stops, a new or changed one starts."""
        wanted = {sensor.name: sensor for sensor in sensors}
        for name, (running, entry) in list(self.running.items()):
            if wanted.get(name) != running:
                drop(entry)
                del self.running[name]
                if name not in wanted:
                    log.info("reload: sensor %s removed", name)
        for name, sensor in wanted.items():
            if name not in self.running:
                self.start(sensor)

    def wake(self, name: str) -> None:
        """Take ``name``'s new interval now, not after the rest of the old wait."""
        running = self.running.get(name)
        if running is not None and running[1].due != math.inf:
            self._reschedule(running[1], asyncio.get_running_loop().time())

    async def stop(self) -> None:
        tasks = [entry.task for _, entry in self.running.values() if entry.task is not None]
        tasks.extend(self.lanes.tasks)
        self._stopped = True
        self._disarm()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def shutdown(self) -> None:
        """Leave hung measurements behind: their threads die with the process."""
        self.lanes.shutdown()

    # -- starting ------------------------------------------------------------

    async def _start_on_thread(self, entry: ScheduledSensor) -> None:
        """``start()`` on a passing thread of its own (it may hang as ``measure()`` may)."""
        assert entry.sensor is not None
        try:
            error = await start_on_thread(entry.sensor, entry.name)
        finally:
            entry.task = None
        if error is not None:
            log.error("sensor %s failed to start: %s", entry.name, error)
            return
        self._started(entry, lambda: None)

    def _started(self, entry: ScheduledSensor, start: Callable[[], None]) -> None:
        assert entry.sensor is not None
        try:
            start()
            entry.on_thread = entry.sensor.may_block()
            entry.read = entry.sensor.compact_reader()
        except Exception as error:  # a sensor must not take the agent down
            log.error("sensor %s failed to start: %s", entry.name, error)
            return
        log.info("sensor %s started, every %g s", entry.name, entry.config.interval)
        entry.due = asyncio.get_running_loop().time()  # its first measurement: at once
        self._arm()

    # -- the ticks -----------------------------------------------------------

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tick on ``loop``: in its tick slot where it offers one (:mod:`~fructosa.agent.lean_loop`), else by
        ``call_at``."""
        self._disarm()
        if self._slot is not None:
            self._slot.release()
        self._loop, claim = loop, getattr(loop, "claim_tick_slot", None)
        self._slot = claim(self._on_timer) if claim is not None else None
        self._clock = loop_clock(loop)

    def _arm(self) -> None:
        """Arm the timer for the earliest due time (a tick re-arms it once it is over)."""
        if self._ticking or self._stopped or self._loop is None:
            return
        due = math.inf
        for _, entry in self.running.values():  # a loop, not min() of a generator: one code object less per tick
            if entry.due < due:
                due = entry.due
        if due == self._armed:
            return
        slot = self._slot
        if slot is not None:  # lagent's loop: one slot, re-armed in place (for math.inf: disarmed)
            self._armed = due
            slot.arm(due)
            return
        if self._timer is not None:  # _disarm, inline: a tick re-arms once a second
            self._timer.cancel()
            self._timer = None
        self._armed = math.inf
        if due != math.inf:
            self._armed = due
            self._timer = self._loop.call_at(due, self._on_timer)

    def _disarm(self) -> None:
        if self._slot is not None:
            self._slot.disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = math.inf

    def _on_timer(self) -> None:
        self._timer, self._armed = None, math.inf
        self._ticking = True
        try:
            self._tick()
        finally:
            self._ticking = False
            self._arm()

    def _tick(self) -> None:
        """Measure every sensor due now: those that may block in one lane, the others on the loop."""
        clock = self._clock
        now = clock()
        lane = []
        taken: list[tuple[str, object]] = []
        """The samples measured on the loop, handed over together (``record_all``)."""
        schedules, origin = self.plan.schedules, self.origin
        assert origin is not None
        upcoming: dict[float, float] = {}
        """Interval → the grid point a sensor measured now is next due at (the steady state's
        shortcut: see below)."""
        for _, entry in list(self.running.values()):
            if entry.busy_since is not None:
                watch(entry, now)
            if entry.due > now + SAME_TICK:
                continue
            if entry.on_thread:
                entry.due = math.inf
                entry.busy_since = now
                lane.append(entry)
                continue
            name = entry.name
            try:
                value = entry.read()  # the sensor's measure_compact, or its psutil call itself
            except Exception as error:
                failed(entry, error)
                self._reschedule(entry, clock())
                continue
            if value is None or entry.hung_logged:
                self._recorded(entry, value)
            else:  # _recorded's usual case
                taken.append((name, value))
            if name in schedules:  # adaptive: the plan may change its interval
                self._reschedule(entry, clock())
                continue
            # _reschedule of a sensor at its configured interval. The first grid point after the
            # time a sensor finished is also the first after the time a later one finished as long
            # as it lies ahead of that time: the sensors of one interval share it.
            finished, interval = clock(), entry.interval
            due = upcoming.get(interval, -math.inf)
            if due <= finished:
                due = upcoming[interval] = next_due(origin, interval, finished)
            earlier = due < entry.due
            entry.due = due
            if earlier:
                self._arm()
        if taken:
            self._any_recorded = True
            try:
                self.record_all(taken)
            except Exception as error:  # the samples of a tick must not stop the ticks
                self._record_errors.log(logging.ERROR, "tick", "samples of a tick not recorded: %s: %s",
                                        type(error).__name__, error)  # fmt: skip
        if lane:  # after the loop's own, so that the two do not contend for the GIL
            # The loop has nothing else to do until the next tick: it waits for the lane (up to
            # LANE_PATIENCE), so that no two threads fight for the GIL and the samples leave together.
            after = min((entry.due for _, entry in self.running.values()), default=math.inf)
            self.lanes.start(lane, min(LANE_PATIENCE, max(0.0, after - SAME_TICK - clock())))
        for rider in self.riders:
            if now + SAME_TICK < rider.due:
                continue  # not its grid point: not called (most ticks)
            try:
                if rider.ride(now):
                    self._any_recorded = True
            except Exception as error:  # the tick goes on
                self._record_errors.log(logging.ERROR, "rider", "work riding on a tick failed: %s: %s",
                                        type(error).__name__, error)  # fmt: skip
        self._tick_recorded()

    def _tick_recorded(self) -> None:
        """Samples were recorded since the last call: tell ``recorded`` once."""
        if self._any_recorded:
            self._any_recorded = False
            if self.recorded is not None:
                try:
                    self.recorded()
                except Exception as error:  # the next tick must come all the same
                    self._record_errors.log(logging.ERROR, "recorded", "samples of a tick not passed on: %s: %s",
                                            type(error).__name__, error)  # fmt: skip

    def _settle(self, results: list[tuple[ScheduledSensor, object, Exception | None]], now: float) -> None:
        for entry, value, error in results:
            entry.busy_since = None
            if self.running.get(entry.name, (None, None))[1] is not entry:
                continue  # removed by a reload meanwhile
            if error is not None:
                failed(entry, error)
            else:
                self._recorded(entry, value)
            self._reschedule(entry, now)
        if not self._ticking:  # a lane that finished after its tick
            self._tick_recorded()

    def _recorded(self, entry: ScheduledSensor, value: object) -> None:
        if entry.hung_logged:
            entry.hung_logged = False
            log.warning("sensor %s returned again", entry.name)
        if value is None:
            return
        self._any_recorded = True
        try:
            self.record(entry.name, value)
        except Exception as error:  # one bad sample must not stop the ticks
            self._record_errors.log(logging.ERROR, entry.name, "sample of sensor %s not recorded: %s: %s",
                                    entry.name, type(error).__name__, error)  # fmt: skip

    def _reschedule(self, entry: ScheduledSensor, now: float) -> None:
        """Its next grid point of the current interval (slowing down first if the plan says so)."""
        if entry.sensor is None or self.running.get(entry.name, (None, None))[1] is not entry:
            return  # idle, or removed by a reload meanwhile
        assert self.origin is not None
        # slows down also when the sensor its condition reads has fallen silent
        self.plan.expire(entry.name, now)
        due = next_due(self.origin, self.plan.interval(entry.config), now)
        earlier = due < entry.due
        entry.due = due
        if earlier:
            self._arm()
