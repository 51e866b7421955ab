"""``/api/jobs``: running and recently ended Slurm jobs, one job with its profile and flags, its series.

Wiring: ``add_job_routes(app, JobService(tracker, ...))`` after
:func:`~.app.make_app`; the tracker (:class:`fructosa.jobs.tracker.JobTracker`)
is a tap of lmaster's flow. The routes are under ``/api``, so the bearer
token guards them like the rest of the API.

An ended job's profile is what ``fructosa-job-report --format json`` prints:
from lmaster's own job memory when it kept the job's samples, else from
graphite-web when ``[http] graphite url`` is set (the job's facts from the
tracker, or from sacct for a job lmaster never saw), else 409 with the reason.
Slurm and graphite-web are asked in a thread, one job at a time, so a slow
Slurm or graphite-web never holds up lmaster's loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from ..jobs.allocation import AllocationQueries
from ..jobs.report import ReportError, job_profile
from ..jobs.slurm import SlurmError
from ..jobs.tracker import JobRecord, JobTracker

log = logging.getLogger(__name__)

STATES = ("running", "ended")


class JobService:
    """The tracker, plus what answers an ended job's profile when the tracker cannot (Slurm, graphite-web)."""

    def __init__(
        self,
        tracker: JobTracker,
        slurm: AllocationQueries | None = None,
        graphite_url: str | None = None,
        graphite_prefix: str = "",
    ) -> None:
        self.tracker, self.slurm = tracker, slurm
        self.graphite_url, self.graphite_prefix = graphite_url, graphite_prefix
        self._outside = asyncio.Semaphore(1)
        self._memory_queue: asyncio.Queue[JobRecord] = asyncio.Queue(maxsize=1000)
        self._asking: dict[str, asyncio.Future[None]] = {}
        if slurm is not None:
            tracker.on_ended = self._ask_memory_later

    def _ask_memory_later(self, record: JobRecord) -> None:
        try:
            self._memory_queue.put_nowait(record)
        except asyncio.QueueFull:
            pass  # its memory flags stay unevaluated

    async def run(self) -> None:
        """Ask Slurm for the allocated memory of each job that ended (the memory flags need it), until cancelled."""
        while True:
            record = await self._memory_queue.get()
            await self.allocated_memory(record)

    async def allocated_memory(self, record: JobRecord) -> None:
        """Ask Slurm once per job (a request and the background asker share one question)."""
        if self.slurm is None:
            return
        task = self._asking.get(record.job_id)
        if task is None:
            if record.memory_asked:
                return
            record.memory_asked = True
            task = self._asking[record.job_id] = asyncio.ensure_future(self._ask_memory(record))
            task.add_done_callback(lambda _: self._asking.pop(record.job_id, None))
        await asyncio.shield(task)

    async def _ask_memory(self, record: JobRecord) -> None:
        assert self.slurm is not None
        async with self._outside:
            memory = await asyncio.to_thread(self.slurm.allocated_memory, record.job_id)
        if memory is not None:
            record.allocated_memory, record.profile = memory, None

    async def outside_profile(self, job_id: str, record: JobRecord | None) -> dict[str, Any]:
        """The profile from graphite-web (and Slurm accounting for facts lmaster lacks); web errors."""
        if self.graphite_url is None:
            if record is None:
                raise web.HTTPNotFound(text=f"unknown job {job_id!r}")
            raise _conflict(f"job {job_id}: lmaster kept none of its samples and [http] graphite url is not set")
        async with self._outside:
            try:
                job = record.as_job() if record is not None and record.from_slurm else None
                memory = record.allocated_memory if record is not None else None
                if job is None and self.slurm is not None:
                    job = await asyncio.to_thread(self.slurm.accounted_job, job_id)
                    if job is not None:
                        memory = await asyncio.to_thread(self.slurm.allocated_memory, job_id)
                if job is None:
                    raise web.HTTPNotFound(text=f"unknown job {job_id!r} (not known to lmaster nor Slurm accounting)")
                return await asyncio.to_thread(job_profile, job, self.graphite_url, self.graphite_prefix, memory,
                                               self.tracker.thresholds)  # fmt: skip
            except SlurmError as error:
                raise web.HTTPBadGateway(text=str(error)) from None
            except ReportError as error:
                if error.status == 2:
                    raise web.HTTPNotFound(text=str(error)) from None
                if error.status == 3:
                    raise _conflict(str(error)) from None
                raise web.HTTPBadGateway(text=str(error)) from None


JOBS = web.AppKey("jobs", JobService)
routes = web.RouteTableDef()


def add_job_routes(app: web.Application, service: JobService) -> None:
    app[JOBS] = service
    app.add_routes(routes)


def _conflict(message: str) -> web.HTTPConflict:
    return web.HTTPConflict(text=message)


def job_summary(tracker: JobTracker, record: JobRecord, now: float) -> dict[str, Any]:
    """One row of the jobs table: facts, the newest use summed over nodes, efficiency, flag names."""
    latest = [samples.latest for samples in record.samples.values()]
    cpu = [values["cpu_percent"] for values in latest if "cpu_percent" in values]
    rss = [values["rss"] for values in latest if "rss" in values]
    end = record.end if record.end is not None else now
    efficiency, flags = None, None
    if record.running:
        if cpu and record.cpus:
            efficiency = round(sum(cpu) / record.cpus, 1)
    else:
        profile = tracker.profile(record)
        if profile is not None:
            efficiency, flags = profile["cpu_efficiency_percent"], [flag["name"] for flag in profile["flags"]]
    return {
        "job_id": record.job_id,
        "name": record.name,
        "user": record.user,
        "partition": record.partition,
        "nodes": record.nodes or sorted(record.samples),
        "cpus": record.cpus,
        "state": record.state,
        "status": "running" if record.running else "ended",
        "start": record.start,
        "end": record.end,
        "duration_seconds": round(end - record.start, 1) if record.start is not None else None,
        "cpu_percent": round(sum(cpu), 1) if cpu else None,
        "rss": int(sum(rss)) if rss else None,
        "cpu_efficiency_percent": efficiency,
        "flags": flags,
        "from_slurm": record.from_slurm,
    }


@routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    unknown = set(request.query) - {"state", "user"}
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown parameter {sorted(unknown)[0]!r}; valid: state, user")
    wanted = request.query.get("state")
    if wanted is not None and wanted not in STATES:
        raise web.HTTPBadRequest(text=f"unknown state {wanted!r}; valid: {', '.join(STATES)}")
    user = request.query.get("user")
    tracker = request.app[JOBS].tracker
    now = tracker.clock()
    rows = [
        job_summary(tracker, record, now)
        for record in tracker.records.values()
        if (wanted is None or record.running == (wanted == "running")) and (user is None or record.user == user)
    ]
    rows.sort(key=lambda row: (row["status"] != "running", -(row["end"] or row["start"] or 0.0)))
    running = sum(row["status"] == "running" for row in rows)
    body = {"jobs": rows, "running": running, "ended": len(rows) - running, "max_ended": tracker.limits.max_ended,
            "slurm": tracker.slurm_attached}  # fmt: skip
    response = web.json_response(body)
    if len(response.body or b"") > 16_384:
        response.enable_compression()
    return response


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job"]
    if not job_id.isdigit() or len(job_id) > 20:
        raise web.HTTPBadRequest(text=f"{job_id[:40]!r} is not a Slurm job id")
    return job_id


@routes.get("/api/jobs/{job}")
async def one_job(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    service = request.app[JOBS]
    tracker = service.tracker
    record = tracker.get(job_id)
    now = tracker.clock()
    if record is None or (not record.running and not record.has_series() and record.profile is None):
        profile = await service.outside_profile(job_id, record)
        if record is None:
            return web.json_response({"job": _from_profile(profile), "nodes": {}, "profile": profile,
                                      "profile_source": "graphite"})  # fmt: skip
        return web.json_response(_detail(tracker, record, now, profile, "graphite"))
    if not record.running:
        await service.allocated_memory(record)
    profile = None if record.running else tracker.profile(record)
    return web.json_response(_detail(tracker, record, now, profile, "lmaster" if profile else None))


def _detail(
    tracker: JobTracker, record: JobRecord, now: float, profile: dict[str, Any] | None, source: str | None
) -> dict[str, Any]:
    nodes = {
        node: {"time": samples.latest_time, **{metric: samples.latest.get(metric) for metric in _LATEST}}
        for node, samples in sorted(record.samples.items())
    }
    return {"job": job_summary(tracker, record, now), "nodes": nodes, "profile": profile, "profile_source": source}


_LATEST = ("cpu_percent", "rss", "read_bytes_per_second", "write_bytes_per_second", "processes")


def _from_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """A job-table row for a job lmaster never saw, from its graphite-web profile."""
    return {
        "job_id": profile["job_id"], "name": profile["name"], "user": profile["user"],
        "partition": profile["partition"], "nodes": sorted([*profile["nodes"], *profile["nodes_without_data"]]),
        "cpus": profile["allocated_cpus"], "state": profile["state"], "status": "ended", "start": profile["start"],
        "end": profile["end"], "duration_seconds": profile["duration_seconds"], "cpu_percent": None, "rss": None,
        "cpu_efficiency_percent": profile["cpu_efficiency_percent"],
        "flags": [flag["name"] for flag in profile["flags"]], "from_slurm": True,
    }  # fmt: skip


@routes.get("/api/jobs/{job}/history")
async def job_history(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    record = request.app[JOBS].tracker.get(job_id)
    if record is None:
        raise web.HTTPNotFound(text=f"unknown job {job_id!r}")
    return web.json_response(request.app[JOBS].tracker.history(record))


# -- OpenAPI -------------------------------------------------------------------------------------------

_NUMBER = {"type": ["number", "null"]}
_INTEGER = {"type": ["integer", "null"]}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}  # fmt: skip


_NODE_PROFILE = {
    "type": "object",
    "required": ["samples", "cpu_percent_mean", "cpu_percent_peak", "rss_mean", "rss_peak", "processes_peak",
                 "read_bytes", "write_bytes"],
    "additionalProperties": False,
    "properties": {
        "samples": {"type": "integer"}, "cpu_percent_mean": _NUMBER, "cpu_percent_peak": _NUMBER,
        "rss_mean": _INTEGER, "rss_peak": _INTEGER, "processes_peak": _INTEGER,
        "read_bytes": _INTEGER, "write_bytes": _INTEGER,
    },
}  # fmt: skip
OPENAPI_SCHEMAS: dict[str, Any] = {
    "JobRow": {
        "type": "object",
        "required": ["job_id", "name", "user", "partition", "nodes", "cpus", "state", "status", "start", "end",
                     "duration_seconds", "cpu_percent", "rss", "cpu_efficiency_percent", "flags", "from_slurm"],
        "additionalProperties": False,
        "properties": {
            "job_id": {"type": "string"}, "name": {"type": "string"},
            "user": {"type": "string", "description": "empty for a job known from its samples only (no [slurm])"},
            "partition": {"type": "string"}, "nodes": {"type": "array", "items": {"type": "string"}},
            "cpus": {**_INTEGER, "description": "allocated CPUs"},
            "state": {"type": "string", "description": "Slurm's state: RUNNING, COMPLETED, CANCELLED, ... (ENDED: "
                                                       "no final state known)"},
            "status": {"enum": list(STATES)},
            "start": _NUMBER, "end": _NUMBER, "duration_seconds": _NUMBER,
            "cpu_percent": {**_NUMBER, "description": "newest CPU use summed over its nodes, % of one CPU"},
            "rss": {**_INTEGER, "description": "newest resident memory summed over its nodes, bytes"},
            "cpu_efficiency_percent": {**_NUMBER, "description": "running: newest CPU use over allocated CPUs; "
                                                                 "ended: the profile's mean"},
            "flags": {"type": ["array", "null"], "items": {"type": "string"},
                      "description": "names of the efficiency flags of an ended job (null: running, or no profile)"},
            "from_slurm": {"type": "boolean", "description": "facts from squeue/sacct; else from its samples only"},
        },
    },
    "Jobs": {
        "type": "object",
        "required": ["jobs", "running", "ended", "max_ended", "slurm"],
        "additionalProperties": False,
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/JobRow"},
                     "description": "running jobs first, then ended ones, newest first"},
            "running": {"type": "integer"}, "ended": {"type": "integer"},
            "max_ended": {"type": "integer", "description": "ended jobs kept at most ([jobs] max ended jobs)"},
            "slurm": {"type": "boolean", "description": "whether lmaster's [slurm] poller has reported"},
        },
    },
    "JobProfile": {
        "type": "object",
        "description": "as fructosa-job-report --format json prints it",
        "required": ["job_id", "name", "user", "partition", "state", "start", "end", "duration_seconds",
                     "allocated_cpus", "used_cpus_mean", "cpu_efficiency_percent", "rss_peak", "read_bytes",
                     "write_bytes", "nodes", "nodes_without_data", "allocated_memory_bytes", "flags"],
        "properties": {
            "job_id": {"type": "string"}, "duration_seconds": {"type": "number"},
            "allocated_cpus": _INTEGER, "used_cpus_mean": _NUMBER, "cpu_efficiency_percent": _NUMBER,
            "rss_peak": _INTEGER, "read_bytes": {"type": "integer"}, "write_bytes": {"type": "integer"},
            "nodes": {"type": "object", "additionalProperties": _NODE_PROFILE},
            "nodes_without_data": {"type": "array", "items": {"type": "string"}},
            "allocated_memory_bytes": _INTEGER,
            "flags": {"type": "array", "items": {
                "type": "object", "required": ["name", "threshold", "value", "message"], "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "threshold": {"type": "number"},
                               "value": {"type": "number"}, "message": {"type": "string"}}}},
        },
    },
    "Job": {
        "type": "object",
        "required": ["job", "nodes", "profile", "profile_source"],
        "additionalProperties": False,
        "properties": {
            "job": {"$ref": "#/components/schemas/JobRow"},
            "nodes": {"type": "object", "description": "node → its newest per-job values", "additionalProperties": {
                "type": "object", "required": ["time", *_LATEST], "additionalProperties": False,
                "properties": {"time": {"type": "number"}, **{metric: _NUMBER for metric in _LATEST}}}},
            "profile": {"anyOf": [{"$ref": "#/components/schemas/JobProfile"}, {"type": "null"}],
                        "description": "an ended job's profile and flags; null while it runs"},
            "profile_source": {"enum": ["lmaster", "graphite", None]},
        },
    },
    "JobHistory": {
        "type": "object",
        "description": "node → metric → its kept series (bucket means, oldest first)",
        "additionalProperties": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["times", "values"], "additionalProperties": False,
            "properties": {"times": {"type": "array", "items": {"type": "number"}},
                           "values": {"type": "array", "items": {"type": "number"}}}}},
    },
}  # fmt: skip

_COMMON = {
    "400": _error("a bad parameter, or a token in the query string"),
    "401": _error("no token or a wrong one (header Authorization: Bearer TOKEN)"),
    "405": _error("method not allowed"),
}
_JOB = {"name": "job", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
OPENAPI_PATHS: dict[str, Any] = {
    "/api/jobs": {"get": {
        "summary": "running and recently ended Slurm jobs",
        "parameters": [{"name": "state", "in": "query", "required": False, "schema": {"enum": list(STATES)}},
                       {"name": "user", "in": "query", "required": False, "schema": {"type": "string"}}],
        "responses": {"200": _ok("Jobs", "jobs"), **_COMMON}}},
    "/api/jobs/{job}": {"get": {
        "summary": "one job: facts, newest values per node, and once ended its profile and efficiency flags",
        "parameters": [_JOB],
        "responses": {"200": _ok("Job", "the job"), **_COMMON, "404": _error("unknown job"),
                      "409": _error("no samples of the job in lmaster and no graphite url, or none in Graphite"),
                      "502": _error("Slurm or graphite-web failed")}}},
    "/api/jobs/{job}/history": {"get": {
        "summary": "the job's series kept by lmaster, per node and metric (the job page's charts)",
        "parameters": [_JOB],
        "responses": {"200": _ok("JobHistory", "series"), **_COMMON, "404": _error("unknown job")}}},
}  # fmt: skip
