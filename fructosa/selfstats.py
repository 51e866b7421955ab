"""The daemon's own CPU and memory use, for its self-metrics.

Read from the kernel directly rather than through :mod:`psutil`: one
``clock_gettime`` for the CPU time and one ``pread`` of ``/proc/self/statm``,
kept open, for the resident memory cost a fifth of what a psutil ``oneshot``
of the same figures does (opening /proc files, parsing, its cache, its named
tuples), and the agent takes this sample every report.
"""

from __future__ import annotations

import os
import threading
import time

MIN_WINDOW = 0.01
"""Seconds: a shorter window (two samples within one clock tick) cannot be rated."""

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def seconds_since_start() -> float:
    """How long this process has existed: its start (``/proc/self/stat`` field 22, clock ticks after boot)
    against the boot-time clock, which neither wall-clock steps nor suspend skew."""
    with open("/proc/self/stat", "rb") as stream:
        fields = stream.read().rpartition(b")")[2].split()
    started = int(fields[19]) / CLOCK_TICKS  # field 22 of the whole line: the 20th after the command's ")"
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


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
        """The process the descriptor and the previous reading belong to; 0: none yet."""
        self._statm = -1
        """``/proc/self/statm`` opened by that process: each ``pread`` at 0 reads it anew."""
        self._previous: tuple[float, float] | None = None  # (CPU seconds, monotonic time)
        self._lock = threading.Lock()

    def sample(self) -> dict[str, float]:
        with self._lock:
            used, now = time.process_time(), time.monotonic()  # CPU of all threads, user + system
            if self._pid != os.getpid():
                # First sample, or a new process (the daemon after detaching): a descriptor opened by the
                # parent is left alone, as detaching closed it and its number may belong to another file now.
                self._statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
                self._pid = os.getpid()
                before, elapsed = 0.0, seconds_since_start()
            else:
                assert self._previous is not None
                before, elapsed = self._previous[0], now - self._previous[1]
            self._previous = (used, now)
            resident = int(os.pread(self._statm, 256, 0).split(None, 2)[1]) * PAGE_SIZE  # what psutil calls rss
            percent = max(0.0, used - before) / max(elapsed, MIN_WINDOW) * 100.0
            return {"cpu_percent": round(percent, 1), "rss_bytes": float(resident)}
