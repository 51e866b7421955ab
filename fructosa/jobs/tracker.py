"""lmaster's memory of Slurm jobs: what runs now, what ended lately, and a compact profile series of each.

The job API (``/api/jobs``) and the jobs page read it, so a finished job's
profile and efficiency flags come from lmaster itself, without graphite-web.
Two feeds fill it:

* as a *tap*, :meth:`JobTracker.observe` sees every checked block and keeps
  the SlurmJobs sensor's per-job datapoints
  (``HOST.SlurmJobs.job_ID.{processes,cpu_percent,rss,read_bytes_per_second,
  write_bytes_per_second}``): per job and node the newest values, and per
  metric a downsampled series (:class:`Series`);
* with ``[slurm]``, the job events poller calls :meth:`JobTracker.polled`
  after each squeue poll: the running jobs' facts (user, partition, nodes,
  CPUs, start) and the ended jobs' final state and end time from sacct.

Without ``[slurm]`` a job is known from its samples alone (no user or
partition) and counts as ended once no sample came for ``silence``
seconds; with it, a job Slurm listed ends when the poller says so.

Memory bound: each series holds at most ``series_points`` points of 24 bytes
(time, mean, maximum; when full, neighbouring points are merged pairwise, so a
long job keeps its whole span at a coarser step and its exact maxima), and all
series together at most ``max_points`` points: past that the series of the
oldest ended jobs are dropped (their profile is computed first and kept), and
when no ended job has series left, new series are not started. Records are
bounded by ``max_jobs`` running and ``max_ended`` ended jobs, ended jobs leave
after ``keep_ended`` seconds. The defaults (120 points, 2,000,000 points in
all, 1,000 ended jobs) cost at most about 48 MB of series plus about 4 KB per
job and node (measured: ``tests/test_jobs_api.py``, tracemalloc).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..graphite_paths import short_hostname
from ..taps import Tap
from ..wire.blocks import Block
from .flags import FlagThresholds
from .report import profile_of, summarize
from .slurm import Job

METRICS = ("cpu_percent", "rss", "read_bytes_per_second", "write_bytes_per_second", "processes")
"""The SlurmJobs sensor's per-job metrics, kept as series."""
_MARKER = b".SlurmJobs.job_"
POINT_BYTES = 24
EXPIRE_INTERVAL = 10.0
"""Seconds between two passes ending silent jobs and forgetting old ones."""
MAX_CACHED_LAYOUTS = 20_000
"""Block layouts known to hold no job datapoint (oldest out first): about one per agent."""


@dataclass(frozen=True)
class JobLimits:
    """How much the tracker keeps; see the module docstring for the memory these bound."""

    series_points: int = 120
    max_points: int = 2_000_000
    max_jobs: int = 20_000
    max_ended: int = 1000
    keep_ended: float = 86_400.0
    silence: float = 120.0

    def __post_init__(self) -> None:
        if self.series_points < 4 or self.series_points % 2:
            raise ValueError("series points must be an even number of at least 4")


class Series:
    """One metric of one job on one node: bucket start times, bucket means and bucket maxima.

    A bucket holds ``per_bucket`` samples; when ``cap`` buckets are full,
    pairs merge (``per_bucket`` doubles), so the series always spans the
    whole job at most ``cap`` points long.
    """

    __slots__ = ("times", "means", "maxima", "per_bucket", "last_count", "last_time")

    def __init__(self) -> None:
        self.times, self.means, self.maxima = array("d"), array("d"), array("d")
        self.per_bucket, self.last_count, self.last_time = 1, 0, float("-inf")

    def add(self, when: float, value: float, cap: int) -> int:
        """Add a sample (older than the newest: ignored, e.g. a resent batch); returns the change in points."""
        if when <= self.last_time:
            return 0
        self.last_time = when
        if self.times and self.last_count < self.per_bucket:
            count = self.last_count
            self.means[-1] = (self.means[-1] * count + value) / (count + 1)
            self.maxima[-1] = max(self.maxima[-1], value)
            self.last_count += 1
            return 0
        change = 1
        if len(self.times) >= cap:
            change -= self._halve()
        self.times.append(when)
        self.means.append(value)
        self.maxima.append(value)
        self.last_count = 1
        return change

    def _halve(self) -> int:
        """Merge neighbouring buckets pairwise (all full: the cap is even); returns the points freed."""
        before = len(self.times)
        self.times = self.times[0::2]
        self.means = array("d", ((a + b) / 2 for a, b in zip(self.means[0::2], self.means[1::2], strict=True)))
        self.maxima = array("d", map(max, self.maxima[0::2], self.maxima[1::2]))
        self.per_bucket *= 2
        return before - len(self.times)

    def points(self) -> list[tuple[float, float]]:
        return list(zip(self.times, self.means, strict=True))

    def peak(self) -> float | None:
        return max(self.maxima) if self.maxima else None


@dataclass
class NodeSamples:
    """One job on one node: the newest values and the series."""

    latest: dict[str, float] = field(default_factory=dict)
    latest_time: float = 0.0
    series: dict[str, Series] | None = field(default_factory=dict)
    """None once dropped for memory (the job's profile was computed before)."""

    def size(self) -> int:
        return sum(len(series.times) for series in (self.series or {}).values())


@dataclass
class JobRecord:
    """What lmaster knows of one job."""

    job_id: str
    name: str = ""
    user: str = ""
    partition: str = ""
    nodes: list[str] = field(default_factory=list)
    cpus: int | None = None
    start: float | None = None
    end: float | None = None
    state: str = "RUNNING"
    running: bool = True
    from_slurm: bool = False
    """Slurm listed it (facts from squeue/sacct); else known from its samples only."""
    last_sample: float = 0.0
    samples: dict[str, NodeSamples] = field(default_factory=dict)
    allocated_memory: int | None = None
    memory_asked: bool = False
    profile: dict[str, Any] | None = None
    """The cached profile of an ended job; None: not computed yet, or stale."""

    def as_job(self) -> Job:
        nodes = self.nodes or sorted(self.samples)
        return Job(self.job_id, self.user, self.partition, ",".join(nodes), self.state, self.start, self.end,
                   self.cpus, self.name)  # fmt: skip

    def has_series(self) -> bool:
        return any(node.series for node in self.samples.values())


class JobTracker(Tap):
    """Running and recently ended jobs; see the module docstring."""

    name = "jobs"

    def __init__(
        self,
        limits: JobLimits | None = None,
        thresholds: FlagThresholds | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits or JobLimits()
        self.thresholds = thresholds or FlagThresholds()
        self.clock = clock
        self.records: dict[str, JobRecord] = {}
        self.points = 0
        self.refused_series = 0
        self.slurm_attached = False
        self.on_ended: Callable[[JobRecord], None] | None = None
        """Called once per job that ends (lmaster asks Slurm for its allocated memory)."""
        self._without_jobs: dict[tuple[int, int, int], None] = {}
        """Block layouts (the hash and length of the path bytes and the datapoint count, as the other taps key
        theirs) seen lately without a SlurmJobs datapoint: an agent sends the same paths block after block, and
        the blocks of a node running no job hold none, so such a block costs one lookup, not a search of its
        path bytes. Layouts with job datapoints are not kept: each job changes its nodes' layouts, and their
        positions would cost memory per job and node."""

    # -- feeds -------------------------------------------------------------------------------------

    def observe(self, block: Block, host: str | None) -> None:
        paths = block.paths
        layout = (hash(paths), len(paths), len(block.times))
        if layout in self._without_jobs:
            return
        if _MARKER not in paths:
            self._without_jobs[layout] = None
            if len(self._without_jobs) > MAX_CACHED_LAYOUTS:
                del self._without_jobs[next(iter(self._without_jobs))]
            return
        times, values = block.times, block.values
        for index, path in enumerate(paths.split(b"\n")):
            if _MARKER not in path:
                continue
            parts = path.decode("ascii").split(".")
            if len(parts) != 4 or parts[1] != "SlurmJobs" or parts[3] not in METRICS:
                continue
            job_id = parts[2][4:]
            if job_id.isdigit():
                self._sample(job_id, parts[0], parts[3], times[index], values[index])

    def _sample(self, job_id: str, node: str, metric: str, when: float, value: float) -> None:
        record = self.records.get(job_id)
        if record is None:
            if self.running_count() >= self.limits.max_jobs:
                return
            record = self.records[job_id] = JobRecord(job_id, start=when)
        samples = record.samples.get(node)
        if samples is None:
            samples = record.samples[node] = NodeSamples()
            if self.points + len(METRICS) > self.limits.max_points and not self._free_points():
                samples.series = None
                self.refused_series += 1
        samples.latest[metric] = value
        samples.latest_time = max(samples.latest_time, when)
        record.last_sample = max(record.last_sample, when)
        if samples.series is not None:
            series = samples.series.get(metric)
            if series is None:
                series = samples.series[metric] = Series()
            self.points += series.add(when, value, self.limits.series_points)
        if not record.running:
            record.profile = None  # a late sample: recompute

    def polled(self, running: Iterable[Job], started: list[Job], ended: list[Job], now: float) -> None:
        """The job events poller's hook: every running job's facts, and the jobs that ended since its last poll."""
        self.slurm_attached = True
        for job in running:
            record = self._from_slurm(job)
            if not record.running:  # requeued
                record.running, record.end, record.profile = True, None, None
        for job in ended:
            record = self._from_slurm(job)
            record.end = job.end if job.end is not None else now
            self._ended(record)

    def _from_slurm(self, job: Job) -> JobRecord:
        record = self.records.get(job.job_id) or self.records.setdefault(job.job_id, JobRecord(job.job_id))
        record.from_slurm = True
        record.name, record.user, record.partition, record.state = job.name, job.user, job.partition, job.state
        record.cpus = job.cpus if job.cpus is not None else record.cpus
        record.start = job.start if job.start is not None else record.start
        try:
            record.nodes = [short_hostname(node) for node in job.nodes] or record.nodes
        except ValueError:
            pass
        return record

    def _ended(self, record: JobRecord) -> None:
        was_running = record.running
        record.running, record.profile = False, None
        if record.state in ("RUNNING", ""):
            record.state = "ENDED"
        if was_running and self.on_ended is not None:
            self.on_ended(record)

    # -- upkeep ------------------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """End jobs known only from samples that went silent; forget ended jobs past the limits."""
        for record in self.records.values():
            if record.running and not record.from_slurm and now - record.last_sample > self.limits.silence:
                record.end = record.last_sample
                self._ended(record)
        ended = sorted((r for r in self.records.values() if not r.running), key=lambda r: r.end or 0.0)
        excess = len(ended) - self.limits.max_ended
        for position, record in enumerate(ended):
            if position < excess or now - (record.end or 0.0) > self.limits.keep_ended:
                self._forget(record)

    def _forget(self, record: JobRecord) -> None:
        self.points -= sum(samples.size() for samples in record.samples.values())
        del self.records[record.job_id]

    def _free_points(self) -> bool:
        """Drop the series of the oldest ended jobs (keeping their profile) until a new job-node fits."""
        needed = self.points + len(METRICS) - self.limits.max_points
        for record in sorted((r for r in self.records.values() if not r.running and r.has_series()),
                             key=lambda r: r.end or 0.0):  # fmt: skip
            if needed <= 0:
                break
            self.profile(record)
            for samples in record.samples.values():
                freed = samples.size()
                samples.series = None
                self.points -= freed
                needed -= freed
        return needed <= 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_INTERVAL)
            self.expire(self.clock())

    def reconfigure(self, limits: JobLimits, thresholds: FlagThresholds) -> None:
        """New limits and thresholds (a reload); cached profiles are recomputed with the new thresholds."""
        if thresholds != self.thresholds:
            for record in self.records.values():
                record.profile = None
        self.limits, self.thresholds = limits, thresholds
        self.expire(self.clock())

    # -- reading -----------------------------------------------------------------------------------

    def running_count(self) -> int:
        return sum(record.running for record in self.records.values())

    def get(self, job_id: str) -> JobRecord | None:
        return self.records.get(job_id)

    def profile(self, record: JobRecord) -> dict[str, Any] | None:
        """The job's profile from the kept series (cached once it ended); None when no series were kept."""
        if record.profile is not None:
            return record.profile
        per_node = {
            node: summarize(
                {metric: series.points() for metric, series in samples.series.items()},
                peaks={metric: series.peak() for metric, series in samples.series.items() if series.peak() is not None},
            )
            for node, samples in sorted(record.samples.items())
            if samples.series
        }
        if not per_node:
            return None
        without = [node for node in record.nodes if node not in per_node]
        job = record.as_job()
        if job.start is None:
            job = Job(**{**job.__dict__, "start": min(s.times[0] for n in record.samples.values()
                                                       for s in (n.series or {}).values() if s.times)})  # fmt: skip
        profile = profile_of(job, per_node, without, record.allocated_memory, self.thresholds, now=self.clock())
        if not record.running:
            record.profile = profile
        return profile

    def history(self, record: JobRecord) -> dict[str, dict[str, dict[str, list[float]]]]:
        """node → metric → ``{"times", "values"}`` (bucket means) of the kept series."""
        return {
            node: {
                metric: {"times": list(series.times), "values": list(series.means)}
                for metric, series in sorted(samples.series.items())
            }
            for node, samples in sorted(record.samples.items())
            if samples.series
        }
