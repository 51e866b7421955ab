"""The processes using the most CPU and memory, for a "top" table in Grafana."""

from __future__ import annotations

import time
from typing import Any

import psutil

from . import proc_table
from .base import Option, Sensor, SensorUnsupported, register
from .proc_table import UserNames

MAX_NAME = 32
"""Characters of a process name kept in paths (comm names have 15)."""


def job_number(job: object) -> int | None:
    """A Slurm job id as a Graphite value; None for no job or a non-numeric id."""
    if isinstance(job, bool) or job is None:
        return None
    try:
        return int(str(job))
    except ValueError:
        return None


def job_of(pid: int) -> object:
    """The Slurm job ``pid`` runs in (None outside jobs), from the jobs package."""
    from ..jobs.discovery import job_id_of_pid  # late: the sensors load before and without Slurm support

    return job_id_of_pid(pid)


def process_label(name: str | None) -> str:
    """The name shown for a process: kernel threads lose their per-CPU or
    per-queue suffix (``kworker/3:1H-kblockd`` → ``kworker``,
    ``ksoftirqd/7`` → ``ksoftirqd``), so they add one name, not hundreds."""
    if not name:
        return "unknown"
    base = name.split("/", 1)[0] if not name.startswith("/") else name
    return base[:MAX_NAME] or "unknown"


@register
class TopProcesses(Sensor):
    """The ``count`` processes using the most CPU and the ``count`` using the
    most memory (resident set). For each rank R (1 = highest) of each list
    (``cpu``, ``memory``):

    * ``HOST.TopProcesses.LIST.rank_R.cpu_percent`` (% of one CPU, since the
      previous sample), ``.memory_percent`` (% of RAM), ``.rss`` (bytes),
      ``.pid`` and ``.job_id`` (the Slurm job, when the process is in one);
    * ``HOST.TopProcesses.LIST.rank_R.who.USER.NAME``: the process's identity
      as path components (kernel threads without their ``/N`` suffix), its
      value the list's measure (CPU % or bytes), so a Grafana table shows
      names with ``aliasByNode``;
    * ``HOST.TopProcesses.processes``: how many processes there are.

    Bounded cardinality: numbers that change with every process (pid, job
    id) are values under fixed paths, never path components; only the
    identity path holds names. Its series count is 2 × count × the distinct
    (user, name) pairs that ever reached that rank: on a compute node the
    job's program, a shell, Python, slurmstepd and system daemons, tens over
    weeks; a busy login node with hundreds of users makes more, so there a
    shorter whisper retention for ``*.TopProcesses.*.*.who.**`` (or a lower
    ``count``) keeps it in check. One series per pid, or carbon tags per
    process, would grow with every process ever started.

    CPU % is measured between this sensor's own two samples from each
    process's CPU time (no blocking interval); a process started since the
    previous sample is measured since its start. The first sample after a
    start (or reload) has no window yet: it sends the memory list and the
    process count, and no CPU list. One pass reads every process's
    /proc/PID/stat, nothing else (:mod:`.proc_table`); only the few that make
    a list have their name, user (the name service asked once per uid) and
    Slurm job looked up."""

    description = "the N processes with the most CPU and memory: name, user, pid, Slurm job"
    default_interval = 10.0
    options = (Option("count", int, 5, "processes in each list (the top N by CPU and the top N by memory)"),)

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        self._cpu_seconds: dict[tuple[int, int], float] = {}
        """CPU seconds by (pid, start time in clock ticks) at the previous sample."""
        self._previous_time: float | None = None
        self._user_names = UserNames()
        self._boot_time: float | None = None

    def read(self) -> dict:
        if not proc_table.available():
            raise SensorUnsupported("no Linux /proc on this host")
        now_wall, now = time.time(), time.monotonic()
        elapsed = None if self._previous_time is None else now - self._previous_time
        if self._boot_time is None:
            self._boot_time = psutil.boot_time()
        seen: dict[tuple[int, int], float] = {}
        measured: list[tuple[proc_table.ProcStat, float | None]] = []
        for stat in proc_table.all_stats():
            identity = (stat.pid, stat.started)
            used = seen[identity] = stat.cpu_seconds
            percent = None
            before = self._cpu_seconds.get(identity)
            if before is not None and elapsed:
                percent = max(0.0, used - before) / elapsed * 100.0
            elif elapsed:  # new since the previous sample: measured since its start
                since_start = now_wall - (self._boot_time + stat.started / proc_table.CLOCK_TICKS)
                percent = used / min(max(since_start, 0.01), elapsed) * 100.0
            measured.append((stat, None if percent is None else round(percent, 2)))
        self._cpu_seconds, self._previous_time = seen, now
        count = self.settings["count"]
        by_cpu = sorted(
            (entry for entry in measured if entry[1] is not None), key=lambda entry: (-entry[1], entry[0].pid)
        )
        by_rss = sorted(measured, key=lambda entry: (-entry[0].rss, entry[0].pid))
        chosen = []
        for stat, percent in {entry[0].pid: entry for entry in by_cpu[:count] + by_rss[:count]}.values():
            uid = proc_table.real_uid(stat.pid)  # only the few shown: their name, user and job
            chosen.append(
                {
                    "pid": stat.pid,
                    "name": proc_table.name_of(stat),
                    "username": None if uid is None else self._user_names(uid),
                    "cpu_percent": percent,
                    "rss": stat.rss,
                    "job": job_of(stat.pid),
                }
            )
        return {"count": len(measured), "memory_total": psutil.virtual_memory().total, "processes": chosen}

    def shape(self, raw: dict) -> dict:
        count, total = self.settings["count"], raw.get("memory_total")
        processes = raw.get("processes") or []
        return {
            "processes": raw.get("count"),
            "cpu": _ranks(_ranked(processes, "cpu_percent", count), "cpu_percent", total),
            "memory": _ranks(_ranked(processes, "rss", count), "rss", total),
        }


def _ranked(processes: list[dict], measure: str, count: int) -> list[dict]:
    """The ``count`` processes with the highest ``measure``; ties by lower pid."""
    known = [process for process in processes if process.get(measure) is not None]
    return sorted(known, key=lambda process: (-process[measure], process["pid"]))[:count]


def _ranks(processes: list[dict], measure: str, memory_total: float | None) -> dict:
    ranks = {}
    for rank, process in enumerate(processes, start=1):
        rss = process.get("rss")
        ranks[f"rank_{rank}"] = {
            "pid": process["pid"],
            "cpu_percent": process.get("cpu_percent"),
            "rss": rss,
            "memory_percent": round(100.0 * rss / memory_total, 2) if rss is not None and memory_total else None,
            "job_id": job_number(process.get("job")),
            "who": {process.get("username") or "unknown": {process_label(process.get("name")): process[measure]}},
        }
    return ranks
