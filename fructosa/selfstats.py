"""The daemon's own CPU and memory use, for its self-metrics."""

from __future__ import annotations

import psutil


class ProcessUsage:
    """CPU percent of one core since the previous sample, and resident memory."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent()  # the reference point for the first sample

    def sample(self) -> dict[str, float]:
        with self._process.oneshot():
            return {"cpu_percent": self._process.cpu_percent(), "rss_bytes": float(self._process.memory_info().rss)}
