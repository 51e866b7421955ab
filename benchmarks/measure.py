"""Measuring processes: CPU from /proc/PID/stat, RSS from /proc/PID/status,
child processes pinned to CPUs and stopped only by their own PID.

CPU is ``utime + stime`` (all
threads of the process) before and after a window, divided by the window and
``SC_CLK_TCK``; 100 % is one core. One tick is 10 ms, so short windows are
coarse: an agent needs ≥ 60 s.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
RELAY_CPU = {0}
"""The core of the process under test (relay, lmaster, agent)."""
LOAD_CPU = {1} if CORES > 1 else {0}
"""The core of everything else: senders, sinks, carbon-cache, helpers."""
SNAPSHOT_VARIABLE = "FRUCTOSA_BENCH_SNAPSHOT"
"""Set by ``run.py --commit REV`` to ``REV=DIR``: fructosa is imported from DIR."""


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
        fields = stream.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """On-CPU nanoseconds of each live thread (/proc/PID/task/TID/schedstat):
    a cross-check finer than clock ticks; threads that ended are not in it."""
    result = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as stream:
                result[int(tid)] = int(stream.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return result


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class CpuWindow:
    """CPU % of one process over a window: ``start()``, then ``stop()``."""

    pid: int
    started_cpu: float = 0.0
    started_at: float = 0.0
    started_ns: dict[int, int] = field(default_factory=dict)
    percent: float = 0.0
    """utime + stime over the window, % of one core (the figure reported)."""
    schedstat_percent: float = 0.0
    """The same from the scheduler's nanosecond counters (cross-check)."""
    seconds: float = 0.0

    def start(self) -> CpuWindow:
        self.started_ns = thread_cpu_ns(self.pid)
        self.started_cpu, self.started_at = cpu_seconds(self.pid), time.monotonic()
        return self

    def stop(self) -> float:
        self.seconds = time.monotonic() - self.started_at
        self.percent = 100.0 * (cpu_seconds(self.pid) - self.started_cpu) / self.seconds
        ended = thread_cpu_ns(self.pid)
        used = sum(ns - self.started_ns.get(tid, 0) for tid, ns in ended.items())
        self.schedstat_percent = 100.0 * used / 1e9 / self.seconds
        return self.percent


def thread_switches(pid: int) -> dict[int, int]:
    """Voluntary + involuntary context switches of each live thread of ``pid``
    (/proc/PID/task/TID/status): every one is a wakeup of the process."""
    result = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii") as stream:
                # voluntary_ctxt_switches and nonvoluntary_ctxt_switches
                switches = sum(int(line.split()[1]) for line in stream if "ctxt_switches:" in line)
        except (OSError, ValueError, IndexError):
            continue
        result[int(tid)] = switches
    return result


@dataclass
class WakeupWindow:
    """Context switches per second of one process (all its threads) over a window,
    and its thread count: ``start()``, then ``stop()``. A thread that ended
    within the window takes its switches with it (the kernel keeps no total)."""

    pid: int
    started: dict[int, int] = field(default_factory=dict)
    started_at: float = 0.0
    per_second: float = 0.0
    threads: int = 0
    most_threads: int = 0
    """The most threads seen at once (sampled at start, at stop and by :meth:`poll`)."""

    def start(self) -> WakeupWindow:
        self.started, self.started_at = thread_switches(self.pid), time.monotonic()
        self.most_threads = len(self.started)
        return self

    def poll(self) -> None:
        """Note the current thread count (call now and then during the window)."""
        self.most_threads = max(self.most_threads, len(os.listdir(f"/proc/{self.pid}/task")))

    def stop(self) -> float:
        seconds = time.monotonic() - self.started_at
        ended = thread_switches(self.pid)
        self.per_second = sum(count - self.started.get(tid, 0) for tid, count in ended.items()) / seconds
        self.threads = len(ended)
        self.most_threads = max(self.most_threads, self.threads)
        return self.per_second


def _machine_busy_seconds() -> float:
    """Busy CPU seconds of all cores since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as stream:
        fields = [int(value) for value in stream.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def _tree_seconds() -> float:
    total = 0.0
    for pid in _process_tree(os.getpid()):
        try:
            total += cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            pass
    return total


@dataclass
class ForeignWindow:
    """CPU used by processes outside this benchmark during a window, in % of
    one core: machine busy time (/proc/stat) minus this process tree's. Other
    sessions' tests on a shared machine show up here and distort the figures."""

    started_busy: float = 0.0
    started_ours: float = 0.0
    started_at: float = 0.0
    percent: float = 0.0

    def start(self) -> ForeignWindow:
        self.started_busy, self.started_ours, self.started_at = (
            _machine_busy_seconds(),
            _tree_seconds(),
            time.monotonic(),
        )
        return self

    def stop(self) -> float:
        seconds = time.monotonic() - self.started_at
        foreign = (_machine_busy_seconds() - self.started_busy) - (_tree_seconds() - self.started_ours)
        self.percent = max(0.0, 100.0 * foreign / seconds)
        return self.percent


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` to ``cpus`` (threads it starts later inherit)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass  # a thread that just ended


def pin_self(cpus: set[int]) -> None:
    os.sched_setaffinity(0, cpus)


class Proc:
    """A child process pinned to ``cpus``, logging to a file, stopped by its PID only."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cpus: set[int], cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("ab")
        self.popen = subprocess.Popen(
            list(argv),
            cwd=cwd or log_path.parent,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.running:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}) during start: {self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {timeout} s: {self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM our PID, SIGKILL after ``timeout`` s. Idempotent."""
        atexit.unregister(self.stop)
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if not self._log.closed:
            self._log.close()


def can_connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def missing(*programs: str) -> str | None:
    """None when every program is on PATH (or in the venv), else the first missing one."""
    for program in programs:
        if shutil.which(program) is None and not (VENV_BIN / program).exists():
            return program
    return None


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def child_pythonpath() -> str:
    """PYTHONPATH for children: what we run with (a snapshot first), then the
    repository (for ``benchmarks`` and ``tests``)."""
    return os.pathsep.join(part for part in (os.environ.get("PYTHONPATH", ""), str(REPO)) if part)


def _process_tree(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stream:
                    parents[int(entry)] = int(stream.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    tree, changed = {root}, True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                changed = True
    return tree


def foreign_load(seconds: float = 1.0, threshold: float = 5.0) -> list[tuple[int, float, str]]:
    """Processes outside this benchmark's tree using more than ``threshold`` % of
    a core over ``seconds``: (pid, percent, command), busiest first."""

    def snapshot() -> dict[int, float]:
        result = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    result[int(entry)] = cpu_seconds(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        return result

    before = snapshot()
    time.sleep(seconds)
    after = snapshot()
    ours = _process_tree(os.getpid())
    busy = []
    for pid, used in after.items():
        percent = 100.0 * (used - before.get(pid, used)) / seconds
        if pid not in ours and percent > threshold:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                command = "?"
            busy.append((pid, percent, command.strip()[:100]))
    return sorted(busy, key=lambda item: -item[1])


def wait_for_idle(timeout: float, threshold: float = 5.0) -> list[tuple[int, float, str]]:
    """Wait up to ``timeout`` s for the machine to be free of foreign load;
    returns what was still busy (empty when idle)."""
    deadline = time.monotonic() + timeout
    while True:
        busy = foreign_load(threshold=threshold)
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(4)


IDLE_WAIT = [0.0]
"""Seconds :func:`settle` waits at most for foreign load to end (run.py sets it)."""


def settle() -> None:
    """Before a measurement: wait (up to IDLE_WAIT) for other processes to go quiet."""
    if IDLE_WAIT[0] > 0:
        busy = wait_for_idle(IDLE_WAIT[0])
        if busy:
            print(f"    (machine still busy: pid {busy[0][0]} at {busy[0][1]:.0f} %: {busy[0][2][:60]})", flush=True)


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import fructosa

    snapshot = os.environ.get(SNAPSHOT_VARIABLE)
    revision = snapshot.split("=", 1)[0] if snapshot else "HEAD"
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", revision], capture_output=True, text=True)
    if snapshot:
        label = f"{commit.stdout.strip()} (snapshot of {revision}'s fructosa/)"
    else:
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "fructosa"], capture_output=True, text=True
        ).stdout.strip()
        label = commit.stdout.strip() + (" + uncommitted changes in fructosa/" if dirty else "")
    return {
        "cores": CORES,
        "cpu": model,
        "python": sys.version.split()[0],
        "commit": label,
        "fructosa": str(Path(fructosa.__file__).parent),
        "relay_core": sorted(RELAY_CPU),
        "load_core": sorted(LOAD_CPU),
    }
