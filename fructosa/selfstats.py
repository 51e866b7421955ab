"""The daemon's own CPU and memory use, for its self-metrics."""

from __future__ import annotations

import os
import threading
import time

import psutil

MIN_WINDOW = 0.01
"""Seconds: a shorter window (two samples within one clock tick) cannot be rated."""


class ProcessUsage:
    """CPU percent of one core since the previous sample, and resident memory.

    Keeps its own previous reading (CPU seconds and the monotonic clock), so
    the figure covers exactly the time since the previous sample whichever
    thread asks. The first sample has no previous reading: it covers the
    time since the process started (when its CPU time was 0), never a
    meaningless 0.

    Follows the pid: the object is made before the daemon detaches (a new
    process), and must then measure the daemon, not its parent.
    """

    def __init__(self) -> None:
        self._pid = 0
        self._process: psutil.Process | None = None
        self._previous: tuple[float, float] | None = None  # (CPU seconds, monotonic time)
        self._lock = threading.Lock()

    def sample(self) -> dict[str, float]:
        with self._lock:
            if self._process is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._process = psutil.Process(self._pid)
                self._previous = None
            with self._process.oneshot():
                times = self._process.cpu_times()
                rss = float(self._process.memory_info().rss)
                started = self._process.create_time()
            now, used = time.monotonic(), times.user + times.system
            if self._previous is None:  # since the start: the wall clock is what create_time is on
                before, elapsed = 0.0, time.time() - started
            else:
                before, elapsed = self._previous[0], now - self._previous[1]
            self._previous = (used, now)
            percent = max(0.0, used - before) / max(elapsed, MIN_WINDOW) * 100.0
            return {"cpu_percent": round(percent, 1), "rss_bytes": rss}
