"""lagent's sensor tasks, each on its own grid of the monotonic clock.

A sensor measures at ``start + k·interval``, so intervals do not drift by
the time a measurement takes; a measurement slower than its interval skips
the grid points it missed instead of piling up work. psutil calls run in
worker threads (one per sensor at most), so a slow one (a hung NFS mount
under DiskUsage) stalls only its own sensor. The interval is the adaptive
plan's current one, taken at once when the plan switches it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from ..adaptive import AdaptivePlan, next_due
from ..config import SensorConfig
from ..ratelog import RateLimitedLog
from ..sensors import REGISTRY, SensorUnsupported

log = logging.getLogger(__package__)


class SensorScheduler:
    """Runs the configured sensors and hands each measurement to ``record(sensor name, value)``.

    A sensor whose ``measure()`` returns None has nothing to report this time
    (a rate's first reading): nothing is recorded for it.
    """

    def __init__(self, plan: AdaptivePlan, record: Callable[[str, object], None]) -> None:
        self.plan = plan
        self.record = record
        self.running: dict[str, tuple[SensorConfig, asyncio.Task]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        # Threads start only when needed; one per sensor at most, so a hung one blocks only itself.
        self._executor = ThreadPoolExecutor(max_workers=len(REGISTRY), thread_name_prefix="sensor")

    def start(self, sensor: SensorConfig) -> None:
        task = asyncio.create_task(self._run(sensor), name=f"sensor-{sensor.name}")
        self.running[sensor.name] = (sensor, task)

    def apply(self, sensors: Iterable[SensorConfig]) -> None:
        """Run exactly ``sensors``: a removed or changed one stops, a new or changed one starts."""
        wanted = {sensor.name: sensor for sensor in sensors}
        for name, (running, task) in list(self.running.items()):
            if wanted.get(name) != running:
                task.cancel()
                del self.running[name]
                if name not in wanted:
                    log.info("reload: sensor %s removed", name)
        for name, sensor in wanted.items():
            if name not in self.running:
                self.start(sensor)

    def wake(self, name: str) -> None:
        """Take ``name``'s new interval now, not after the rest of the old wait."""
        wakeup = self._wakeups.get(name)
        if wakeup is not None:
            wakeup.set()

    async def stop(self) -> None:
        tasks = [task for _, task in self.running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def shutdown(self) -> None:
        """Leave hung measurements behind: their threads die with the process."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, config: SensorConfig) -> None:
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
                if value is not None:
                    self.record(config.name, value)
            while True:  # sleep to the next grid point of the current interval
                # slows down also when the sensor its condition reads has fallen silent
                self.plan.expire(config.name, loop.time())
                wakeup.clear()
                due = next_due(origin, self.plan.interval(config), loop.time())
                try:
                    await asyncio.wait_for(wakeup.wait(), max(0.0, due - loop.time()))
                except asyncio.TimeoutError:  # the builtin one only from Python 3.11
                    break
