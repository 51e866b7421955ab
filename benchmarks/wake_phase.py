"""When in each second a periodic process runs: its wake phase on CLOCK_MONOTONIC.

The agent benchmark runs lagent, the bare psutil loop and collectd at once on
one core. Each ticks once a second at a phase set by its own start (lagent's
grid starts at its first sensor's start, the loop's at the phase it is given,
collectd's read threads at the moment its configuration registered them). Two
that wake at the same instant queue behind each other on the core, and which
one runs first (warm caches, no wait) is decided by the scheduler, not by the
code under test; lagent runs as SCHED_BATCH and does not preempt on wakeup,
the others do. So the benchmark keeps them apart and this module checks that
they are: it polls every thread's on-CPU nanoseconds (/proc/PID/task/TID/schedstat)
every couple of milliseconds from the load core and puts each increase at its
instant modulo one second.
"""

from __future__ import annotations

import cmath
import math
import time
from dataclasses import dataclass

from .measure import thread_cpu_ns

PERIOD = 1.0
"""Every process under test ticks once a second."""


@dataclass
class WakePhase:
    """Where a process's CPU time fell within the second."""

    phase: float
    """The CPU-weighted circular mean of the instants it ran, in [0, 1) s of CLOCK_MONOTONIC."""
    near_share: float
    """The share of its CPU time within ±50 ms of :attr:`phase` (1.0: one burst a second)."""
    cpu_ns: int
    """On-CPU nanoseconds seen while probing."""


def circular_distance(a: float, b: float, period: float = PERIOD) -> float:
    """Seconds between two phases, the short way round."""
    gap = (a - b) % period
    return min(gap, period - gap)


def phase_of(instant: float, period: float = PERIOD) -> float:
    return instant % period


def next_instant_at(phase: float, after: float, period: float = PERIOD) -> float:
    """The first CLOCK_MONOTONIC instant ≥ ``after`` whose phase is ``phase``."""
    return after + (phase - after) % period


def probe(pids: dict[str, int], seconds: float = 3.0, poll: float = 0.002) -> dict[str, WakePhase]:
    """Each process's :class:`WakePhase` over ``seconds``, polling every ``poll`` s."""
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
    last = {name: sum(thread_cpu_ns(pid).values()) for name, pid in pids.items()}
    previous = time.monotonic()
    deadline = previous + seconds
    while (now := time.monotonic()) < deadline:
        for name, pid in pids.items():
            used = sum(thread_cpu_ns(pid).values())
            if used > last[name]:
                samples[name].append(((previous + now) / 2, used - last[name]))
            last[name] = used
        previous = now
        time.sleep(poll)
    return {name: summarise(points) for name, points in samples.items()}


def summarise(points: list[tuple[float, int]], period: float = PERIOD) -> WakePhase:
    total = sum(ns for _, ns in points)
    if not total:
        return WakePhase(math.nan, 0.0, 0)
    mean = sum(ns * cmath.exp(2j * math.pi * instant / period) for instant, ns in points)
    phase = (cmath.phase(mean) / (2 * math.pi) * period) % period
    near = sum(ns for instant, ns in points if circular_distance(instant % period, phase, period) <= 0.05)
    return WakePhase(phase, near / total, total)


def closest_pair(phases: dict[str, WakePhase]) -> tuple[float, str, str]:
    """The two processes whose phases are nearest, and how near (s)."""
    names = sorted(phases)
    pairs = [(circular_distance(phases[a].phase, phases[b].phase), a, b)
             for i, a in enumerate(names) for b in names[i + 1:]]  # fmt: skip
    return min(pairs)
