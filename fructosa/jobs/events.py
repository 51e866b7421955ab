"""The master's view of Slurm: job start/end events and running-job counts.

With a ``[slurm]`` section lmaster polls ``squeue`` every ``poll interval``
seconds and

* sends ``fructosa.slurm.jobs.running.total``, ``….running.cpus``,
  ``….running.by_user.USER`` and ``….running.by_partition.PARTITION``
  (a user or partition whose last job ended gets one final 0, then its
  series stops), ``fructosa.slurm.jobs.started`` / ``….ended`` (counters:
  jobs seen starting / ending since lmaster started, so no poll is lost to
  whisper's one point per second; ``nonNegativeDerivative`` gives jobs per
  interval) and ``fructosa.slurm.up`` (1 when squeue answered);
* posts one graphite-web event per job start and end (``events url``),
  tagged ``slurm job_start|job_end job_ID user_USER partition_P``, with the
  job's name, user, nodes and CPUs in ``data``: Grafana shows them as
  annotations (Graphite "events" query on tag ``slurm``).

Jobs already running when lmaster starts are counted but get no start
event (they were announced by the previous run, or are unknowable); a job
that starts and ends between two polls is not seen. End details (final
state and end time) come from ``sacct`` when the cluster has accounting
(slurmdbd or jobcomp), else the time of the poll that missed the job.

Paths are bounded by the cluster's users and partitions; job ids appear
only in events, never in paths.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable

from ..config import SlurmConfig
from ..graphite_paths import Datapoint, sample_to_datapoints, sanitize_component
from ..ratelog import RateLimitedLog
from .slurm import Job, Slurm, SlurmError

log = logging.getLogger(__name__)

EVENT_POST_TIMEOUT = 5.0
MAX_PENDING_EVENTS = 10_000
"""Events kept for a retry while graphite-web is unreachable (oldest dropped first)."""


def running_counts(
    jobs: Iterable[Job], users_before: Iterable[str] = (), partitions_before: Iterable[str] = ()
) -> dict:
    """``{"total", "cpus", "by_user", "by_partition"}`` of the running jobs.

    Users and partitions in ``*_before`` without a job now get 0, so their
    series end at zero instead of on their last count.
    """
    jobs = list(jobs)
    by_user = dict.fromkeys(users_before, 0)
    by_partition = dict.fromkeys(partitions_before, 0)
    for job in jobs:
        by_user[job.user] = by_user.get(job.user, 0) + 1
        for partition in job.partition.split(","):  # a pending multi-partition job runs in one, but be safe
            by_partition[partition] = by_partition.get(partition, 0) + 1
    return {
        "total": len(jobs),
        "cpus": sum(job.cpus or 0 for job in jobs),
        "by_user": by_user,
        "by_partition": by_partition,
    }


def _tag(prefix: str, value: str) -> str:
    return f"{prefix}_{sanitize_component(value or 'unknown')}"


def job_event(job: Job, kind: str, when: float) -> dict:
    """The graphite-web event (``what``, ``tags``, ``when``, ``data``) of a job start or end."""
    verb = "started" if kind == "start" else f"ended ({job.state or 'ENDED'})"
    nodes = job.nodelist or "?"
    return {
        "what": f"Slurm job {job.job_id} {verb}",
        "tags": [
            "slurm",
            f"job_{kind}",
            _tag("job", job.job_id),
            _tag("user", job.user),
            _tag("partition", job.partition),
        ],
        "when": int(when),
        "data": f"job {job.job_id} {job.name!r} of {job.user} on {nodes} ({job.partition}, {job.cpus or '?'} CPUs)",
    }


def job_stream_event(job: Job, kind: str, when: float) -> dict:
    """A job start or end as the live stream shows it (``state``: started or ended; ``job_state``: Slurm's)."""
    return {
        "job": job.job_id, "state": "started" if kind == "start" else "ended", "job_state": job.state or "ENDED",
        "user": job.user, "name": job.name, "partition": job.partition, "nodes": job.nodelist, "cpus": job.cpus,
        "time": when,
    }  # fmt: skip


class JobEventsPoller:
    """Polls Slurm and turns what changed into datapoints and events.

    ``emit`` receives datapoints ``(path, (time, value))`` (without the
    Graphite prefix, which the master's sinks add). :meth:`observe` is the
    pure-state heart, separated so it can be driven directly.
    """

    def __init__(
        self,
        config: SlurmConfig,
        emit: Callable[[list[Datapoint]], None],
        slurm: Slurm | None = None,
        on_poll: Callable[[list[Job], list[Job], list[Job], float], None] | None = None,
        publish: Callable[[dict], None] | None = None,
    ) -> None:
        """``on_poll(running, started, ended, now)`` after each poll: lmaster's job tracker; ``publish``
        receives each job start and end for the live stream (:func:`job_stream_event`)."""
        self.config = config
        self.emit = emit
        self.on_poll = on_poll
        self.publish = publish
        self.slurm = slurm or Slurm(
            squeue=config.squeue, sacct=config.sacct, timeout=config.command_timeout, slurm_conf=config.slurm_conf
        )
        self.known: dict[str, Job] | None = None  # None until the first successful poll
        self._users: set[str] = set()
        self._partitions: set[str] = set()
        self.pending_events: collections.deque[dict] = collections.deque(maxlen=MAX_PENDING_EVENTS)
        self.events_posted = 0
        self.started_total = 0
        self.ended_total = 0
        self._errors = RateLimitedLog(log, period=600.0)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``poll interval`` until ``stop`` is set; never raises on Slurm or HTTP trouble."""
        log.info(
            "Slurm poller started: squeue every %g s%s", self.config.poll_interval,
            f", events to {self.config.events_url}" if self.config.events_url else " (no events url: metrics only)",
        )  # fmt: skip
        while not stop.is_set():
            try:
                await self.poll()
            except Exception as error:  # the master must keep relaying whatever happens here
                self._errors.log(logging.ERROR, "poll", "Slurm poll failed: %s: %s", type(error).__name__, error)
            try:
                await asyncio.wait_for(stop.wait(), self.config.poll_interval)
            except asyncio.TimeoutError:
                pass

    async def poll(self) -> None:
        """One round: squeue, what changed, sacct for ended jobs, emit, post events."""
        now = time.time()
        try:
            jobs = await asyncio.to_thread(self.slurm.running_jobs)
        except SlurmError as error:
            self._errors.log(logging.WARNING, "squeue", "Slurm poll: %s", error)
            self.emit([("fructosa.slurm.up", (float(int(now)), 0.0))])
            return
        started, ended = self.changes(jobs)
        if ended:
            ended = await asyncio.to_thread(self._accounted, ended, now)
        datapoints, events = self.observe(jobs, started, ended, now)
        self.emit(datapoints)
        if self.on_poll is not None:
            self.on_poll(jobs, started, ended, now)
        if self.publish is not None:
            for kind, changed in (("start", started), ("end", ended)):
                for job in changed:
                    self.publish(job_stream_event(job, kind, (job.start if kind == "start" else job.end) or now))
        self.pending_events.extend(events)
        if self.config.events_url and self.pending_events:
            await asyncio.to_thread(self._post_pending)

    def changes(self, jobs: list[Job]) -> tuple[list[Job], list[Job]]:
        """Jobs that started and jobs that ended since the previous poll (none on the first)."""
        now_running = {job.job_id: job for job in jobs}
        if self.known is None:
            if now_running:
                log.info("Slurm poller: %d jobs already running (no start events for them)", len(now_running))
            return [], []
        started = [job for job_id, job in now_running.items() if job_id not in self.known]
        ended = [job for job_id, job in self.known.items() if job_id not in now_running]
        return started, ended

    def observe(
        self, jobs: list[Job], started: list[Job], ended: list[Job], now: float
    ) -> tuple[list[Datapoint], list[dict]]:
        """Datapoints and events for this poll; remembers ``jobs`` for the next one."""
        counts = running_counts(jobs, self._users, self._partitions)
        self._users = {user for user, count in counts["by_user"].items() if count}
        self._partitions = {partition for partition, count in counts["by_partition"].items() if count}
        self.known = {job.job_id: job for job in jobs}
        self.started_total += len(started)
        self.ended_total += len(ended)
        value = {"up": 1, "jobs": {"running": counts, "started": self.started_total, "ended": self.ended_total}}
        # Whole seconds: two polls within one whisper second then replace each other in
        # carbon's cache (latest wins) instead of racing in one whisper write.
        second = int(now)
        datapoints = sample_to_datapoints({"host": "fructosa", "sensor": "slurm", "time": second, "value": value})
        events = [job_event(job, "start", job.start or now) for job in started]
        events += [job_event(job, "end", job.end or now) for job in ended]
        return datapoints, events

    def _accounted(self, ended: list[Job], now: float) -> list[Job]:
        """Ended jobs with their final state and end time from sacct, where it knows them."""
        try:
            records = {job.job_id: job for job in self.slurm.accounted_jobs([job.job_id for job in ended])}
        except SlurmError as error:
            self._errors.log(logging.INFO, "sacct", "Slurm poll: no end details from sacct: %s", error)
            records = {}
        merged = []
        for job in ended:
            record = records.get(job.job_id)
            merged.append(record if record is not None else Job(**{**job.__dict__, "state": "ENDED", "end": now}))
        return merged

    def _post_pending(self) -> None:
        """POST queued events to graphite-web, oldest first; stop at the first failure (retried next poll)."""
        assert self.config.events_url is not None
        while self.pending_events:
            event = self.pending_events[0]
            request = urllib.request.Request(
                self.config.events_url, data=json.dumps(event).encode(), method="POST",
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=EVENT_POST_TIMEOUT) as response:
                    response.read()
            except urllib.error.HTTPError as error:
                if 400 <= error.code < 500:  # refused for good: retrying would not help
                    self._errors.log(logging.WARNING, "event-refused", "graphite-web refused event %r: HTTP %d",
                                     event["what"], error.code)  # fmt: skip
                    self.pending_events.popleft()
                    continue
                self._errors.log(logging.WARNING, "event", "cannot post Slurm events to %s: HTTP %d (%d waiting)",
                                 self.config.events_url, error.code, len(self.pending_events))  # fmt: skip
                return
            except (OSError, ValueError) as error:
                self._errors.log(logging.WARNING, "event", "cannot post Slurm events to %s: %s (%d waiting)",
                                 self.config.events_url, error, len(self.pending_events))  # fmt: skip
                return
            self.pending_events.popleft()
            self.events_posted += 1
