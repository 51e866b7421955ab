"""The floor for lagent's overhead: the psutil calls of the nine sensors of
issue 7, once a second on a fixed grid, nothing else (no asyncio, no
threads, no network). Runs until SIGTERM.

``psutil_loop.py [PHASE]``: with PHASE (seconds in [0, 1)) the grid is the
instants of CLOCK_MONOTONIC whose fraction of a second is PHASE, so that the
agent benchmark can place the loop's wakeups away from lagent's and
collectd's on the shared core; without it the grid starts at the loop's start.
"""

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
    if len(sys.argv) > 1:  # the first grid point at the given phase, at most a second away
        origin += (float(sys.argv[1]) - origin) % 1.0
    tick = 0
    while True:
        time.sleep(max(0.0, origin + tick - time.monotonic()))
        measure_once()
        tick += 1


if __name__ == "__main__":
    main()
