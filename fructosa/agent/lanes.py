"""The worker threads of the sensors that may block, for :class:`~fructosa.agent.scheduler.SensorScheduler`.

The sensors of one tick that may block are measured one after the other on one
worker thread (a :class:`Lane`); :class:`LaneRunner` starts lanes, lets the
loop wait for a lane as long as the scheduler allows, and is the watchdog: a
lane still busy after :data:`LANE_PATIENCE` seconds keeps only its slow
sensor, and the sensors not begun move on to another thread. Results go to
the scheduler's ``settle`` callback, whenever they come.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..sensors import REGISTRY

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from .scheduler import ScheduledSensor

LANE_PATIENCE = 1.0
"""Seconds the sensors of a lane wait behind a slow one before they move to another thread."""

Results = list[tuple["ScheduledSensor", object, "Exception | None"]]


class Lane:
    """Sensors due at one tick that may block, measured one after the other on one worker thread.

    :meth:`run` is the thread's side; :meth:`take_over` is the watchdog's: the
    sensor being measured stays on this thread, those not begun are handed back
    to go on elsewhere. Results pile up in ``results`` (sensor, value, error),
    also the slow sensor's once it returns.
    """

    def __init__(self, entries: Iterable[ScheduledSensor]) -> None:
        self.waiting = deque(entries)
        self.results: list[tuple[ScheduledSensor, object, Exception | None]] = []
        self.current: ScheduledSensor | None = None
        self._lock = threading.Lock()
        self._abandoned = False

    def run(self) -> None:
        while True:
            with self._lock:
                if self._abandoned or not self.waiting:
                    return
                entry = self.current = self.waiting.popleft()
            assert entry.sensor is not None
            try:
                outcome: tuple[object, Exception | None] = (entry.sensor.measure_compact(), None)
            except Exception as error:
                outcome = (None, error)
            with self._lock:
                self.results.append((entry, *outcome))
                self.current = None

    def take_results(self) -> list[tuple[ScheduledSensor, object, Exception | None]]:
        with self._lock:
            results, self.results = self.results, []
        return results

    def take_over(self) -> tuple[ScheduledSensor | None, list[ScheduledSensor]]:
        """Stop the lane after its current sensor: (that sensor or None, those not begun)."""
        with self._lock:
            self._abandoned = True
            waiting = list(self.waiting)
            self.waiting.clear()
            return self.current, waiting


class LaneRunner:
    """Starts and follows lanes; hands their results to ``settle(results, loop time)``."""

    def __init__(self, settle: Callable[[Results, float], None]) -> None:
        self._settle = settle
        self.tasks: set[asyncio.Task] = set()
        """The watchdogs of lanes still running (the scheduler's ``stop`` waits for them)."""
        self._executor: ThreadPoolExecutor | None = None

    def shutdown(self) -> None:
        """Leave hung measurements behind: their threads die with the process."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _workers(self) -> ThreadPoolExecutor:
        """The lanes' threads: a new one only when every other is busy (a lane, or a sensor
        it left behind), so at most one per sensor; none at all while no such sensor runs."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=len(REGISTRY) + 1, thread_name_prefix="sensor")
        return self._executor

    def start(self, entries: list[ScheduledSensor], wait: float = 0.0) -> None:
        """Measure ``entries`` on a worker thread; the loop waits for them up to ``wait``
        seconds (they usually take milliseconds: their samples then leave with the
        others'), then lets them finish on their own."""
        lane = Lane(entries)
        measured = self._workers().submit(lane.run)
        if wait:
            try:
                measured.result(timeout=wait)
            except TimeoutError:
                pass
            else:
                self._settle(lane.take_results(), asyncio.get_running_loop().time())
                return
        task = asyncio.create_task(self._follow(lane, asyncio.wrap_future(measured), wait), name="sensor-lane")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _follow(self, lane: Lane, measured: asyncio.Future, waited: float) -> None:
        loop = asyncio.get_running_loop()
        done, _ = await asyncio.wait({measured}, timeout=LANE_PATIENCE - waited)
        if not done:  # the watchdog: whoever has not begun goes on elsewhere
            slow, waiting = lane.take_over()
            self._settle(lane.take_results(), loop.time())
            if waiting:
                self.start(waiting)
            if slow is None:
                return
            await measured  # the slow one keeps this thread until it returns
        self._settle(lane.take_results(), loop.time())
