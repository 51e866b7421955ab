"""``fructosa-job-report JOBID``: how a finished Slurm job used its nodes.

The job's nodes, time span and allocated CPUs come from Slurm accounting
(``sacct``, or ``sacct -c`` with ``JobCompType=jobcomp/filetxt``); its
per-job series (``NODE.SlurmJobs.job_ID.*``, written by the SlurmJobs
sensor) come from graphite-web's render API. The profile: duration, CPU
used vs allocated (efficiency), peak and mean resident memory, and bytes
read and written, per node and in total, and the efficiency flags of
:mod:`.flags` (idle CPUs, memory unused or near its limit, heavy IO, a
short job), whose thresholds have command line options. The memory Slurm
allocated comes from :mod:`.allocation`. ``--png DIR`` also saves charts
rendered by graphite-web.

Exit status: 0 profile printed, 1 Slurm or graphite-web failed, 2 unknown
job, 3 no data for the job in Graphite (unknown nodes, outside retention,
or no SlurmJobs sensor on its nodes). Every failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..graphite_paths import sanitize_component
from .allocation import AllocationQueries
from .flags import FlagThresholds, job_flags
from .slurm import Job, SlurmError

METRICS = ("cpu_percent", "rss", "read_bytes_per_second", "write_bytes_per_second", "processes")
HTTP_TIMEOUT = 30.0
MARGIN = 60
"""Seconds of series fetched beyond the job's span: the sensor's samples straddle it."""


class ReportError(Exception):
    """A one-line reason the report cannot be made, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        raise ReportError(f"graphite-web answered HTTP {error.code} to {url.split('?')[0]}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ReportError(f"cannot reach graphite-web at {url.split('/render')[0]}: {reason}") from None


def render_json(base_url: str, targets: Sequence[str], start: int, end: int) -> dict[str, list[tuple[int, float]]]:
    """``/render?format=json`` as target → non-null ``(timestamp, value)`` points."""
    query = urllib.parse.urlencode(
        [("target", target) for target in targets] + [("from", str(start)), ("until", str(end)), ("format", "json")]
    )
    try:
        series = json.loads(_get(f"{base_url.rstrip('/')}/render?{query}"))
    except ValueError:
        raise ReportError("graphite-web's render API returned something that is not JSON") from None
    return {
        item["target"]: [(int(ts), float(value)) for value, ts in item["datapoints"] if value is not None]
        for item in series
    }


def node_known(base_url: str, path: str) -> bool:
    """Whether Graphite has any metric below ``path`` (``/metrics/find``)."""
    query = urllib.parse.urlencode({"query": path, "format": "treejson"})
    return bool(json.loads(_get(f"{base_url.rstrip('/')}/metrics/find?{query}")))


def summarize(
    points: dict[str, list[tuple[float, float]]],
    step_hint: float | None = None,
    peaks: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A node's profile from its per-job series (metric → points); pure.

    CPU and memory are means and maxima over the samples; IO volume is the
    rates integrated over the time between samples. ``peaks`` (metric →
    maximum) replaces the maxima of the points when those are downsampled
    means (lmaster's job memory keeps the exact maxima beside them).
    """
    cpu = [value for _, value in points.get("cpu_percent", [])]
    rss = [value for _, value in points.get("rss", [])]
    processes = [value for _, value in points.get("processes", [])]
    peaks = peaks or {}
    cpu_peak = peaks.get("cpu_percent", max(cpu) if cpu else None)
    rss_peak = peaks.get("rss", max(rss) if rss else None)
    processes_peak = peaks.get("processes", max(processes) if processes else None)
    profile: dict[str, Any] = {
        "samples": max((len(series) for series in points.values()), default=0),
        "cpu_percent_mean": round(sum(cpu) / len(cpu), 1) if cpu else None,
        "cpu_percent_peak": round(cpu_peak, 1) if cpu_peak is not None else None,
        "rss_mean": int(sum(rss) / len(rss)) if rss else None,
        "rss_peak": int(rss_peak) if rss_peak is not None else None,
        "processes_peak": int(processes_peak) if processes_peak is not None else None,
    }
    for direction in ("read", "write"):
        series = points.get(f"{direction}_bytes_per_second", [])
        profile[f"{direction}_bytes"] = int(_integrate(series, step_hint)) if series else None
    return profile


def _integrate(series: list[tuple[float, float]], step_hint: float | None) -> float:
    """Σ rate × seconds it stands for (the gap to the next point; the median gap for the last)."""
    if not series:
        return 0.0
    gaps = [later[0] - earlier[0] for earlier, later in zip(series, series[1:], strict=False)]
    typical = sorted(gaps)[len(gaps) // 2] if gaps else (step_hint or 1.0)
    return sum(
        value * (gap if gap <= 3 * typical else typical)
        for (_, value), gap in zip(series, [*gaps, typical], strict=True)
    )


def job_profile(
    job: Job,
    base_url: str,
    prefix: str = "",
    allocated_memory: int | None = None,
    thresholds: FlagThresholds | None = None,
) -> dict[str, Any]:
    """The report's data: the job from Slurm, each node's profile from Graphite, and the flags they raise.

    ``allocated_memory`` is the job's total in bytes as Slurm recorded it
    (None: unknown, and the memory flags are not evaluated).
    """
    nodes = job.nodes
    if not nodes:
        raise ReportError(f"job {job.job_id}: Slurm accounting lists no nodes (it never ran)", 2)
    if job.start is None:
        raise ReportError(f"job {job.job_id}: Slurm accounting has no start time (it never ran)", 2)
    end = job.end if job.end is not None else time.time()
    start_s, end_s = int(job.start) - MARGIN, int(end) + MARGIN
    lead = f"{prefix}." if prefix else ""
    per_node: dict[str, Any] = {}
    unknown, empty = [], []
    for node in nodes:
        base = f"{lead}{sanitize_component(node)}.SlurmJobs.job_{sanitize_component(job.job_id)}"
        series = render_json(base_url, [f"{base}.{metric}" for metric in METRICS], start_s, end_s)
        points = {target.rsplit(".", 1)[1]: values for target, values in series.items()}
        if not any(points.values()):
            (empty if node_known(base_url, f"{lead}{sanitize_component(node)}") else unknown).append(node)
            continue
        per_node[node] = summarize(points)
    if not per_node:
        if unknown and not empty:
            raise ReportError(f"job {job.job_id} ran on {', '.join(unknown)}, unknown to Graphite", 3)
        raise ReportError(
            f"no data for job {job.job_id} in Graphite between {_when(job.start)} and {_when(end)} "
            f"(outside retention, or no SlurmJobs sensor on {', '.join(nodes)})",
            3,
        )
    return profile_of(job, per_node, sorted(unknown + empty), allocated_memory, thresholds)


def profile_of(
    job: Job,
    per_node: dict[str, dict[str, Any]],
    nodes_without_data: Sequence[str] = (),
    allocated_memory: int | None = None,
    thresholds: FlagThresholds | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The report's data from the job's facts and each node's :func:`summarize`; pure.

    ``fructosa-job-report`` feeds it series from graphite-web, lmaster's
    ``/api/jobs/JOBID`` the series of its own job memory, so both give the
    same profile and flags. A running job (no end) lasts until ``now``.
    """
    end = job.end if job.end is not None else (now if now is not None else time.time())
    start = job.start if job.start is not None else end
    cpu_means = [
        profile["cpu_percent_mean"] for profile in per_node.values() if profile["cpu_percent_mean"] is not None
    ]
    used_cpus = sum(cpu_means) / 100.0 if cpu_means else None
    efficiency = round(100.0 * used_cpus / job.cpus, 1) if used_cpus is not None and job.cpus else None
    profile = {
        "job_id": job.job_id,
        "name": job.name,
        "user": job.user,
        "partition": job.partition,
        "state": job.state,
        "start": job.start,
        "end": job.end,
        "duration_seconds": round(end - start, 1),
        "allocated_cpus": job.cpus,
        "used_cpus_mean": round(used_cpus, 2) if used_cpus is not None else None,
        "cpu_efficiency_percent": efficiency,
        "rss_peak": max((p["rss_peak"] for p in per_node.values() if p["rss_peak"] is not None), default=None),
        "read_bytes": sum(p["read_bytes"] or 0 for p in per_node.values()),
        "write_bytes": sum(p["write_bytes"] or 0 for p in per_node.values()),
        "nodes": per_node,
        "nodes_without_data": sorted(nodes_without_data),
        "allocated_memory_bytes": allocated_memory,
    }
    profile["flags"] = [flag.as_json() for flag in job_flags(profile, thresholds)]
    return profile


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _size(value: float | None) -> str:
    if value is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value} B"


def _allocation(value: int | None) -> str:
    return "an allocation Slurm did not record" if value is None else f"{_size(value)} allocated"


def _num(value: Any, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value}{suffix}"


def format_text(profile: dict[str, Any]) -> str:
    """The profile as a short human-readable report."""
    lines = [
        f"Job {profile['job_id']} ({profile['name']}) of {profile['user']}"
        f" in {profile['partition']}: {profile['state']}",
        f"  ran {_when(profile['start'])} to {_when(profile['end']) if profile['end'] else 'now'}"
        f" ({profile['duration_seconds']:g} s) on {len(profile['nodes'])} node(s)",
        f"  CPU: {_num(profile['used_cpus_mean'])} of {_num(profile['allocated_cpus'])} allocated CPUs used on average"
        f" (efficiency {_num(profile['cpu_efficiency_percent'], ' %')})",
        f"  memory peak {_size(profile['rss_peak'])} of {_allocation(profile['allocated_memory_bytes'])};"
        f" IO read {_size(profile['read_bytes'])}, written {_size(profile['write_bytes'])}",
    ]
    flags = profile.get("flags", [])
    lines += [f"  flag {flag['name']}: {flag['message']}" for flag in flags] or ["  flags: none"]
    for node, p in profile["nodes"].items():
        lines.append(
            f"  {node}: CPU mean {_num(p['cpu_percent_mean'], ' %')} peak {_num(p['cpu_percent_peak'], ' %')},"
            f" memory mean {_size(p['rss_mean'])} peak {_size(p['rss_peak'])},"
            f" read {_size(p['read_bytes'])} written {_size(p['write_bytes'])},"
            f" up to {_num(p['processes_peak'])} processes ({p['samples']} samples)"
        )
    if profile["nodes_without_data"]:
        lines.append(f"  no data from: {', '.join(profile['nodes_without_data'])}")
    return "\n".join(lines)


def save_charts(profile: dict[str, Any], base_url: str, directory: Path, prefix: str = "") -> list[Path]:
    """PNG charts of the job's CPU and memory on each node, rendered by graphite-web."""
    directory.mkdir(parents=True, exist_ok=True)
    lead = f"{prefix}." if prefix else ""
    start, end = int(profile["start"]) - MARGIN, int(profile["end"] or time.time()) + MARGIN
    job = sanitize_component(profile["job_id"])
    saved = []
    for metric, title in (("cpu_percent", "CPU %"), ("rss", "resident memory")):
        targets = [
            f"alias({lead}{sanitize_component(node)}.SlurmJobs.job_{job}.{metric},'{sanitize_component(node)}')"
            for node in profile["nodes"]
        ]
        query = urllib.parse.urlencode(
            [("target", target) for target in targets]
            + [("from", str(start)), ("until", str(end)), ("format", "png"), ("width", "800"), ("height", "300"),
               ("title", f"job {profile['job_id']}: {title}")]
        )  # fmt: skip
        data = _get(f"{base_url.rstrip('/')}/render?{query}")
        if not data.startswith(b"\x89PNG"):
            raise ReportError(f"graphite-web did not render a PNG for {metric} (is cairo installed there?)")
        path = directory / f"job_{job}_{metric}.png"
        path.write_bytes(data)
        saved.append(path)
    return saved


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point."""
    parser = argparse.ArgumentParser(
        prog="fructosa-job-report", description="Profile of a finished Slurm job from FrUCToSA's Graphite data."
    )
    parser.add_argument("job_id", metavar="JOBID", help="Slurm job id")
    parser.add_argument("--graphite", default="http://localhost", metavar="URL", help="graphite-web base URL")
    parser.add_argument("--prefix", default="", help="[Graphite] prefix of lmaster.conf, if any")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--png", metavar="DIR", type=Path, help="also save PNG charts rendered by graphite-web")
    parser.add_argument("--sacct", default="sacct", help="sacct command (default: sacct on PATH)")
    parser.add_argument("--scontrol", default="scontrol", help="scontrol command (default: scontrol on PATH)")
    flags = parser.add_argument_group("flag thresholds")
    for spec in dataclasses.fields(FlagThresholds):
        flags.add_argument(
            f"--{spec.name.replace('_', '-')}", type=float, metavar=spec.metadata["unit"].upper().replace("/", "_PER_"),
            help=f"{spec.metadata['doc']} (default {spec.default:.10g})",
        )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)
    overrides = {
        spec.name: getattr(args, spec.name)
        for spec in dataclasses.fields(FlagThresholds)
        if getattr(args, spec.name) is not None
    }
    try:
        thresholds = FlagThresholds(**overrides)
    except ValueError as error:
        parser.error(str(error))
    try:
        job_id = args.job_id.strip()
        if not job_id.replace("_", "").isdigit():
            raise ReportError(f"{args.job_id!r} is not a Slurm job id", 2)
        slurm = AllocationQueries(sacct=args.sacct, scontrol=args.scontrol)
        job = slurm.accounted_job(job_id)
        if job is None:
            raise ReportError(f"job {job_id}: not in Slurm accounting (unknown job, or not finished yet)", 2)
        profile = job_profile(job, args.graphite, args.prefix, slurm.allocated_memory(job.job_id), thresholds)
        if args.png:
            profile["charts"] = [str(path) for path in save_charts(profile, args.graphite, args.png, args.prefix)]
    except SlurmError as error:
        print(f"fructosa-job-report: {error}", file=sys.stderr)
        return 1
    except ReportError as error:
        print(f"fructosa-job-report: {error}", file=sys.stderr)
        return error.status
    print(json.dumps(profile, indent=2) if args.format == "json" else format_text(profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
