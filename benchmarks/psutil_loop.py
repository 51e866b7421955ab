"""The floor for lagent's overhead: the psutil calls of the nine sensors of
issue 7, once a second on a fixed grid, nothing else (no asyncio, no
threads, no network). Runs until SIGTERM."""

from __future__ import annotations

import signal
import sys
import time

import psutil


def measure_once() -> None:
    psutil.cpu_percent(percpu=True)  # CPUPercent
    psutil.virtual_memory()  # VirtualMemory
    psutil.cpu_times()  # CPUTimes
    psutil.cpu_times_percent()  # CPUTimesPercent
    psutil.cpu_stats()  # CPUStats
    psutil.swap_memory()  # SwapMemory
    psutil.disk_usage("/")  # DiskUsage
    psutil.disk_io_counters()  # DiskIOCounters
    psutil.net_io_counters()  # NetIOCounters


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    origin = time.monotonic()
    tick = 0
    while True:
        measure_once()
        tick += 1
        time.sleep(max(0.0, origin + tick - time.monotonic()))


if __name__ == "__main__":
    main()
