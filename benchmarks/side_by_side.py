"""Agents measured side by side: lagent, the bare psutil loop and collectd at once on one core.

Measured one after the other, each alone for a minute, the ratio lagent / loop
moved between 1.37× and 1.86× for the same code: the machine's background
drifts more between two windows a minute apart than the difference being
measured. Here every program under test runs at the same time on core 0
(lmaster, the sinks and this process on core 1), so all share the same
minute of noise, and the figures are taken over the same window. That is done
in a few rounds, each program started afresh in every round and the start
order rotated, so that neither age nor start order favours one of them; the
judged ratios are the medians of the rounds' ratios, and every round is shown.

CPU is the scheduler's on-CPU nanoseconds of every thread
(/proc/PID/task/TID/schedstat), the judged figure; utime + stime (10-ms
clock ticks, 0.017 % of a 60-s window each) is shown beside it.

**Wake phases.** Each program ticks once a second at a phase of its own:
lagent's grid starts when its first sensor starts, the loop's at the phase it
is given (``psutil_loop.py PHASE``), collectd's when its configuration
registered the read callbacks. Left to chance, two of them often wake at the
same instant (lagent becomes ready right where its grid starts, so a program
started just after it lands within ~20 ms of it). They then queue behind each
other on the core, and the scheduler decides which one runs on an idle core
and which one waits, finds warmer kernel caches, or is preempted (lagent runs
as SCHED_BATCH and does not preempt on wakeup, the other two do): the
arrangement, not the code, would move the figures. Aligning them on purpose
has the same fault. So each round gives the three programs slots a third of
a second apart (rotated with the start order), starts lagent and collectd so
that their grids fall on their slots (their delay from exec to first tick is
learnt from the previous measurement), and measures where each actually runs
(:mod:`benchmarks.wake_phase`) before the window: if two are closer than
:data:`MIN_APART`, the misplaced one is restarted. Each program then wakes to
an idle core, as it would alone, and each finds the caches after the same
thing: one other program's tick a third of a second earlier. The phases are
measured again after the window and printed with every round.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import wake_phase
from .measure import CpuWindow, ForeignWindow, Proc, WakeupWindow, rss_bytes, settle
from .sink import CountingSink

MIN_APART = 0.15
"""Seconds: two programs whose wake phases are nearer than this are not measured together."""
PLACEMENT_TRIES = 3
"""Restarts of a misplaced program per round before measuring anyway (the round says so)."""


@dataclass
class Contender:
    """One program of the side-by-side rounds and how to start it at a phase."""

    label: str
    start: Callable[[str, float | None], Proc]
    """``start(tag, phase)``: ``phase`` is given only to a program that takes it (``delay`` None)."""
    sink: CountingSink | None
    """Where its datapoints are counted (None: it sends none)."""
    delay: float | None
    """Seconds from exec to its first tick, learnt (None: it ticks at the phase it is given)."""
    launched_at: float = 0.0

    def launch(self, tag: str, phase: float) -> Proc:
        if self.delay is None:
            return self.start(tag, phase)
        self.launched_at = wake_phase.next_instant_at(phase - self.delay, time.monotonic() + 0.05)
        time.sleep(max(0.0, self.launched_at - time.monotonic()))
        return self.start(tag, None)

    def learn(self, measured: float) -> None:
        if self.delay is not None and measured == measured:  # not NaN
            self.delay = (measured - self.launched_at) % wake_phase.PERIOD


def slots(count: int, turn: int) -> list[float]:
    """Phases a ``1/count`` s apart, starting half a second from now's phase, shifted by ``turn``."""
    base = wake_phase.phase_of(time.monotonic() + 0.5)
    return [(base + (index + turn) / count) % wake_phase.PERIOD for index in range(count)]


def place(contenders: list[Contender], tag: str, turn: int, warmup: float, probe_s: float) -> tuple[dict, dict, int]:
    """Start ``contenders`` in this order at slots a third of a second apart, wait ``warmup``,
    and restart whichever lands too near another. Returns the processes, their measured
    phases and the restarts it took."""
    targets = dict(zip((c.label for c in contenders), slots(len(contenders), turn), strict=True))
    procs: dict[str, Proc] = {}
    try:
        for contender in contenders:
            procs[contender.label] = contender.launch(f"{tag}-0", targets[contender.label])
        restarts, moved = 0, ""
        while True:
            time.sleep(warmup)
            phases = wake_phase.probe({label: proc.pid for label, proc in procs.items()}, probe_s)
            for contender in contenders:
                if restarts == 0 or contender.label == moved:
                    contender.learn(phases[contender.label].phase)
            apart, first, second = wake_phase.closest_pair(phases)
            if apart >= MIN_APART or restarts >= PLACEMENT_TRIES:
                return procs, phases, restarts
            moved = misplaced(contenders, phases, targets, (first, second))
            restarts += 1
            procs.pop(moved).stop()
            contender = next(c for c in contenders if c.label == moved)
            procs[moved] = contender.launch(f"{tag}-{restarts}", targets[moved])
    except BaseException:
        for proc in procs.values():
            proc.stop()
        raise


def misplaced(contenders: list[Contender], phases: dict, targets: dict, pair: tuple[str, str]) -> str:
    """Of the two nearest programs, the one to restart: not one that takes its phase as given,
    else the one further from its slot."""
    movable = [c.label for c in contenders if c.label in pair and c.delay is not None]
    return max(movable, key=lambda label: wake_phase.circular_distance(phases[label].phase, targets[label]))


def measure_round(contenders: list[Contender], index: int, window: float, warmup: float, probe_s: float) -> dict:
    """One round: all contenders at once, placed apart, measured over the same ``window``."""
    turn = index % len(contenders)
    order = contenders[turn:] + contenders[:turn]
    settle()
    procs, placed, restarts = place(order, f"round{index}", turn, warmup, probe_s)
    try:
        counted0 = {c.label: c.sink.counted for c in order if c.sink is not None}
        foreign = ForeignWindow().start()
        wakeups = {label: WakeupWindow(proc.pid).start() for label, proc in procs.items()}
        cpus = {label: CpuWindow(proc.pid).start() for label, proc in procs.items()}
        deadline = time.monotonic() + window
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            for waker in wakeups.values():
                waker.poll()
        for cpu in cpus.values():
            cpu.stop()
        for waker in wakeups.values():
            waker.stop()
        foreign.stop()
        counted1 = {c.label: c.sink.counted for c in order if c.sink is not None}
        rss = {label: rss_bytes(proc.pid) for label, proc in procs.items()}
        alive = {label: proc.running for label, proc in procs.items()}
        after = wake_phase.probe({label: proc.pid for label, proc in procs.items()}, probe_s)
    finally:
        for proc in procs.values():
            proc.stop()
    agents = {
        label: {
            "cpu_percent": cpus[label].percent,
            "cpu_percent_schedstat": cpus[label].schedstat_percent,
            "rss_mb": rss[label] / 1e6,
            "wakeups_per_s": wakeups[label].per_second,
            "threads": wakeups[label].most_threads,
            "datapoints_per_s": (counted1[label] - counted0[label]) / cpus[label].seconds if label in counted0 else 0.0,
            "window_s": cpus[label].seconds,
            "survived": alive[label],
        }
        for label in procs
    }
    return {
        "round": index + 1,
        "start_order": [c.label for c in order],
        "phase_ms": {label: 1000 * phase.phase for label, phase in placed.items()},
        "phase_ms_after": {label: 1000 * phase.phase for label, phase in after.items()},
        "closest_ms": 1000 * wake_phase.closest_pair(placed)[0],
        "closest_ms_after": 1000 * wake_phase.closest_pair(after)[0],
        "near_share": min(phase.near_share for phase in placed.values()),
        "restarts": restarts,
        "foreign_percent": foreign.percent,
        "agents": agents,
    }


def round_ratio(record: dict, ours: str, other: str, key: str = "cpu_percent_schedstat") -> float | None:
    agents = record["agents"]
    if ours not in agents or other not in agents or not agents[other][key]:
        return None
    return agents[ours][key] / agents[other][key]


def summary_row(label: str, records: list[dict]) -> dict:
    """A program's figures over the rounds: the median of each (threads: the most)."""
    mine = [record["agents"][label] for record in records if label in record["agents"]]

    def median(key: str) -> float:
        return statistics.median(agent[key] for agent in mine)

    return {
        "agent": label,
        "cpu_percent": median("cpu_percent"),
        "cpu_percent_schedstat": median("cpu_percent_schedstat"),
        "rss_mb": median("rss_mb"),
        "wakeups_per_s": median("wakeups_per_s"),
        "threads": max(agent["threads"] for agent in mine),
        "datapoints_per_s": median("datapoints_per_s"),
        "window_s": sum(agent["window_s"] for agent in mine),
        "foreign_percent": statistics.median(record["foreign_percent"] for record in records),
        "survived": all(agent["survived"] for agent in mine),
        "rounds": len(mine),
        "side_by_side": True,
    }


def ratio_summary(records: list[dict], ours: str, other: str) -> dict:
    """lagent against ``other``: the median of the rounds' ratios (schedstat, judged) and each round's."""
    judged = [r for record in records if (r := round_ratio(record, ours, other)) is not None]
    ticks = [r for record in records if (r := round_ratio(record, ours, other, "cpu_percent")) is not None]
    rss = [r for record in records if (r := round_ratio(record, ours, other, "rss_mb")) is not None]
    return {
        "versus": other,
        "cpu": statistics.median(judged) if judged else None,
        "cpu_rounds": judged,
        "cpu_ticks": statistics.median(ticks) if ticks else None,
        "rss": statistics.median(rss) if rss else None,
    }
