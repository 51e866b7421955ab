"""The Slurm jobs running on this node and what each one uses."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import psutil

from ..jobs.discovery import METHODS, discover
from .base import Option, Sensor, register

log = logging.getLogger(__name__)

NO_SLURM = "SlurmJobs: no Slurm on this node (no slurmd, no Slurm cgroups, no scontrol): sending count = 0"
"""Said once per agent run, so a login or service node's log is not spammed."""
SLURM_FOUND = "SlurmJobs: Slurm found on this node"
DISCOVERY_PROBLEM = "SlurmJobs: job discovery by %s failed: %s"
RATES = (
    ("cpu_seconds", "cpu_percent", 100.0),
    ("read_bytes", "read_bytes_per_second", 1.0),
    ("write_bytes", "write_bytes_per_second", 1.0),
)
"""(cumulative counter, rate it becomes, scale): what read() turns into rates per process."""
SUMMED = ("cpu_percent", "rss", "read_bytes_per_second", "write_bytes_per_second")
"""Per-process values that shape() sums per job."""


@dataclass
class _Seen:
    """A job process as of the previous read: its psutil object (which knows
    its create time, so a recycled pid is a new process) and its counters."""

    process: psutil.Process
    counters: dict[str, float]


def _counters(process: psutil.Process) -> tuple[dict[str, float], int | None]:
    """Cumulative CPU seconds and IO bytes (those readable), and the RSS, of one process.

    Raises psutil.NoSuchProcess when it ended; IO counters need root (or the
    same user) and are left out when denied.
    """
    counters: dict[str, float] = {}
    rss = None
    with process.oneshot():
        times = process.cpu_times()
        counters["cpu_seconds"] = times.user + times.system
        try:
            rss = process.memory_info().rss
        except psutil.AccessDenied:
            pass
        try:
            io = process.io_counters()
            counters["read_bytes"], counters["write_bytes"] = float(io.read_bytes), float(io.write_bytes)
        except (psutil.AccessDenied, AttributeError):  # AttributeError: no io_counters on this platform
            pass
    return counters, rss


@register
class SlurmJobs(Sensor):
    """The Slurm jobs with processes on this node, and per job what they use:

    * ``HOST.SlurmJobs.count``: how many jobs run here (always sent; 0 on a
      node without Slurm, which the agent's log says once);
    * ``HOST.SlurmJobs.job_JOBID.processes``: the job's processes here;
    * ``….cpu_percent``: their CPU use summed, in % of one CPU (a job busy
      on 4 CPUs shows 400), measured since the previous sample;
    * ``….rss``: their resident memory summed, in bytes (shared pages count
      once per process, as in ``top``);
    * ``….read_bytes_per_second`` / ``….write_bytes_per_second``: their
      storage IO (needs root for other users' jobs; left out when denied).

    Jobs are found from the node itself (``method``): Slurm's cgroups when
    slurmd uses proctrack/cgroup, else ``SLURM_JOB_ID`` in process
    environments, else ``scontrol listpids`` (see
    :mod:`fructosa.jobs.discovery`); slurmstepd is not counted.

    Cardinality: a job's series exist while it runs here and simply stop
    when it ends, so at any moment there are 5 series per running job; over
    weeks one set per job that ran, which a whisper retention (or carbon's
    usual ``find -mtime`` clean-up) for ``*.SlurmJobs.job_*`` keeps bounded.

    Rates are measured between this sensor's own two samples with cached
    ``psutil.Process`` objects (no blocking interval); a process first seen
    in this sample is measured since it started, so a short job shows from
    its first sample. The first sample after a start (or reload) has no
    window yet: it sends count, processes and RSS, and no rates.
    """

    description = "the Slurm jobs on this node: count, and per job processes, CPU %, RSS and IO rates"
    default_interval = 10.0
    options = (
        Option(
            "method", str, "auto",
            "how jobs are found: auto (cgroups, else process environments, else scontrol listpids) or only one",
            choices=METHODS,
        ),
        Option("scontrol", str, "scontrol",
               "the scontrol command (used by method scontrol, and by auto when not root)"),
    )  # fmt: skip

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        self._seen: dict[int, _Seen] = {}
        self._previous_time: float | None = None
        self._slurm_present: bool | None = None
        self._last_problem: str | None = None

    def read(self) -> dict:
        """Per job, each process's RSS and rates since the previous read (plain data)."""
        found = discover(self.settings["method"], scontrol=self.settings["scontrol"])
        self._report(found.slurm_present, found.source, found.problem)
        now_wall, now = time.time(), time.monotonic()
        elapsed = None if self._previous_time is None else now - self._previous_time
        seen: dict[int, _Seen] = {}
        jobs: dict[str, list[dict]] = {}
        for job, pids in found.jobs.items():
            for pid in sorted(pids):
                entry = self._process(pid)
                if entry is None:
                    continue
                try:
                    counters, rss = _counters(entry.process)
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue  # ended between discovery and now, or not ours to read
                record: dict[str, Any] = {"pid": pid, "rss": rss}
                for counter, rate, scale in RATES:
                    record[rate] = _rate(counters.get(counter), entry.counters.get(counter), elapsed, now_wall,
                                         entry.process, scale)  # fmt: skip
                jobs.setdefault(job, []).append(record)
                seen[pid] = _Seen(entry.process, counters)
        self._seen, self._previous_time = seen, now
        return {"jobs": jobs}

    def _process(self, pid: int) -> _Seen | None:
        """The previous read's entry for ``pid`` when it is still the same process, else a fresh one."""
        previous = self._seen.get(pid)
        if previous is not None and previous.process.is_running():  # is_running compares create times
            return previous
        try:
            return _Seen(psutil.Process(pid), {})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def _report(self, slurm_present: bool, source: str, problem: str | None) -> None:
        """Say once that there is no Slurm (and when that changes), and each new discovery problem once."""
        if slurm_present != self._slurm_present:
            if not slurm_present:
                log.info(NO_SLURM)
            elif self._slurm_present is not None:
                log.info(SLURM_FOUND)
            self._slurm_present = slurm_present
        if problem is not None and problem != self._last_problem:
            log.warning(DISCOVERY_PROBLEM, source, problem)
        self._last_problem = problem

    def shape(self, raw: dict) -> dict:
        """``count`` and per job ``job_JOBID.*`` sums of read()'s per-process records."""
        shaped: dict[str, Any] = {"count": 0}
        for job, processes in (raw.get("jobs") or {}).items():
            if not str(job).isdigit() or not processes:  # Slurm job ids are numbers: anything else is not a job
                continue
            shaped["count"] += 1
            metrics: dict[str, Any] = {"processes": len(processes)}
            for key in SUMMED:
                values = [process[key] for process in processes if process.get(key) is not None]
                metrics[key] = round(sum(values), 2) if values else None
            shaped[f"job_{job}"] = metrics
        return shaped


NEWBORN_AGE = 0.5
"""Seconds a process must have lived before its rates since start are reported: CPU time is counted in
10-ms clock ticks and create_time is rounded to them, so a process a few ticks old would show a busy CPU
as 0 % (or as several hundred). Its first figures then come with the next read."""


def _rate(
    value: float | None,
    before: float | None,
    elapsed: float | None,
    now_wall: float,
    process: psutil.Process,
    scale: float,
) -> float | None:
    """A counter's growth per second (× ``scale``) since the previous read,
    or since the process started when it is new; None before any previous read."""
    if value is None or not elapsed:
        return None
    if before is not None:
        return max(0.0, value - before) / elapsed * scale
    try:
        since_start = now_wall - process.create_time()
    except psutil.Error:
        return None
    if since_start < NEWBORN_AGE:
        return None  # a few clock ticks of life: its counters say nothing yet (a busy loop would read 0 %)
    # create_time is derived from the boot time in whole clock ticks: never count more than elapsed
    return value / min(since_start, elapsed) * scale
