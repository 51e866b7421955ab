"""Slurm jobs on dashboards: the node's active jobs, and one dashboard per job.

The node dashboard's Processes row gets the jobs running on the node (the
original TODO's "active job number") and what each uses. The job dashboard
(``make-fructosa-dashboard --jobs``: ``jobs.json``) shows one job, chosen
with ``$job`` among the ``job_JOBID`` series Graphite holds, on every node
it ran on, with the master's job start/end events as annotations.
"""

from __future__ import annotations

from grafanalib.core import REFRESH_ON_TIME_RANGE_CHANGE, Dashboard, Template

from ..graphite_paths import ANY, Glob, metric_pattern
from ..sensors.slurm import SlurmJobs
from . import metrics as m
from .panels import DATASOURCE, Layout, dashboard, stat, timeseries, uid
from .queries import Query, Scope, alias, call
from .settings import Settings

JOB_VARIABLE = Glob("$job")


def job_panels(s: Scope) -> list:
    """Active jobs on one node: how many, and CPU, memory and IO per job."""
    return [
        stat("Slurm jobs", [alias(s.series(m.SLURM_JOBS), "jobs")], "none", width=4, height=8,
             description="Jobs with processes on this node (SlurmJobs sensor); 0 without Slurm."),
        timeseries("CPU per Slurm job", [s.by_keys(m.SLURM_JOB_CPU, 0)], "percent", width=10,
                   description="% of one CPU, all the job's processes on this node (400 = 4 busy CPUs)."),
        timeseries("Memory per Slurm job", [s.by_keys(m.SLURM_JOB_RSS, 0)], "bytes", width=10,
                   description="Resident memory of the job's processes on this node."),
        timeseries("IO per Slurm job", [s.by_keys(m.SLURM_JOB_IO, 0, 1)], "Bps", width=12,
                   description="Storage read and write rates of the job's processes (needs lagent as root)."),
        timeseries("Processes per Slurm job", [s.by_keys(m.SLURM_JOB_PROCESSES, 0)], "none", width=12),
    ]  # fmt: skip


def job_variable(settings: Settings) -> Template:
    """``$job``: every ``job_JOBID`` Graphite holds (any node), newest data first."""
    return Template(
        name="job",
        label="Job",
        query=metric_pattern(ANY, SlurmJobs.name, (m.SLURM_JOB,), settings.prefix),
        dataSource=DATASOURCE,
        refresh=REFRESH_ON_TIME_RANGE_CHANGE,
        sort=4,  # numerical, descending: the latest jobs first
    )


def job_dashboard(settings: Settings | None = None) -> Dashboard:
    """One Slurm job (``$job``) on each node it ran on."""
    settings = settings or Settings()
    every_node = Scope(ANY, settings.prefix)

    def per_node(field: object) -> Query:
        metric = m.Metric(SlurmJobs, (JOB_VARIABLE, field), sometimes="the job ran on the node")
        return call("aliasByNode", every_node.series(metric), every_node.host_node)

    layout = Layout()
    layout.row(
        "Job",
        [
            timeseries("CPU per node", [per_node("cpu_percent")], "percent", width=12,
                       description="% of one CPU used by the job on each node (400 = 4 busy CPUs)."),
            timeseries("Memory per node", [per_node("rss")], "bytes", width=12),
            timeseries("Read per node", [per_node("read_bytes_per_second")], "Bps", width=8),
            timeseries("Written per node", [per_node("write_bytes_per_second")], "Bps", width=8),
            timeseries("Processes per node", [per_node("processes")], "none", width=8),
        ],
    )  # fmt: skip
    return dashboard(
        title="FrUCToSA Slurm job",
        uid=uid("slurm", "job"),
        description="One Slurm job ($job) on every node it ran on; fructosa-job-report JOBID prints its profile.",
        layout=layout,
        variables=[job_variable(settings)],
        time_from=settings.time_from,
        refresh=settings.refresh,
    )
