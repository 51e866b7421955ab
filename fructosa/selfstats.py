"""The daemon's own CPU and memory use, for its self-metrics."""

from __future__ import annotations

import os

import psutil


class ProcessUsage:
    """CPU percent of one core since the previous sample, and resident memory.

    Follows the pid: the object is made before the daemon detaches (a new
    process), and must then measure the daemon, not its parent.
    """

    def __init__(self) -> None:
        self._pid = 0
        self._process: psutil.Process | None = None

    def sample(self) -> dict[str, float]:
        if self._process is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._process = psutil.Process(self._pid)
            self._process.cpu_percent()  # the reference point; the first value reads 0
        with self._process.oneshot():
            return {"cpu_percent": self._process.cpu_percent(), "rss_bytes": float(self._process.memory_info().rss)}
