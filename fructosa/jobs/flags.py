"""Efficiency flags of a finished job: what an admin should look at, each with the figure that raised it.

Like ClusterCockpit's job footprints, a few simple rules over the job
profile of :mod:`fructosa.jobs.report` point at wasted allocations (idle
CPUs, memory asked for and never touched), jobs about to be killed
(memory near the limit), jobs that load the file systems (IO heavy) and
jobs too short to be worth the scheduling overhead. The rules are a pure
function of the profile and :class:`FlagThresholds`, so they are tested
without Slurm or Graphite.

Each threshold is a field of the frozen dataclass with its one-line doc and
unit in ``metadata``; ``fructosa-job-report`` turns the fields into command
line options, and a configuration section can turn them into keys the same
way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

MIB = 1 << 20


def _threshold(default: float, unit: str, doc: str) -> Any:
    return field(default=default, metadata={"unit": unit, "doc": doc})


@dataclass(frozen=True)
class FlagThresholds:
    """Where each flag starts; the field name is the flag's name."""

    idle_cpus: float = _threshold(0.25, "fraction", "flag a job whose mean CPU use is below this share of its CPUs")
    low_memory_use: float = _threshold(
        0.10, "fraction", "flag a job whose peak memory on every node is below this share of its allocation"
    )
    memory_near_limit: float = _threshold(
        0.90, "fraction", "flag a job whose peak memory on some node is above this share of its allocation"
    )
    io_heavy: float = _threshold(
        100.0 * MIB, "bytes/s", "flag a job that read plus wrote more than this many bytes per second on a node"
    )
    short_job: float = _threshold(60.0, "seconds", "flag a job that ran for less than this many seconds")

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"threshold {spec.name} must be a number, not {value!r}")
            if spec.metadata["unit"] == "fraction" and not 0 < value <= 1:
                raise ValueError(f"threshold {spec.name} = {value!r}: a fraction must be above 0 and at most 1")
            if value < 0:
                raise ValueError(f"threshold {spec.name} = {value!r} must not be negative")


@dataclass(frozen=True)
class Flag:
    """One raised flag: which rule, where it starts, the job's figure, and a sentence for people."""

    name: str
    threshold: float
    value: float
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "value": _round(self.value), "message": self.message}


def _round(value: float) -> float:
    """Enough digits to show why the flag was raised (0.0312, 1.5e8), no float noise."""
    return float(f"{value:.4g}")


def memory_per_node(profile: Mapping[str, Any]) -> float | None:
    """Bytes allocated on each node: Slurm's job total (``mem=`` of its TRES) over the job's nodes."""
    total = profile.get("allocated_memory_bytes")
    nodes = len(profile.get("nodes", {})) + len(profile.get("nodes_without_data", []))
    if not total or not nodes:
        return None
    return total / nodes


def io_rates(profile: Mapping[str, Any]) -> dict[str, float]:
    """Each node's bytes read plus written per second of the job's duration (one second at least)."""
    seconds = max(float(profile.get("duration_seconds") or 0.0), 1.0)
    return {
        node: ((summary.get("read_bytes") or 0) + (summary.get("write_bytes") or 0)) / seconds
        for node, summary in profile.get("nodes", {}).items()
        if summary.get("read_bytes") is not None or summary.get("write_bytes") is not None
    }


def job_flags(profile: Mapping[str, Any], thresholds: FlagThresholds | None = None) -> list[Flag]:
    """The flags a job profile raises, in the order of :class:`FlagThresholds`' fields.

    A rule whose figures are missing (no CPU samples, an allocation Slurm
    did not record) raises nothing: a flag always names a measured figure.
    """
    limits = thresholds or FlagThresholds()
    flags: list[Flag] = []

    used, allocated = profile.get("used_cpus_mean"), profile.get("allocated_cpus")
    if used is not None and allocated:
        share = used / allocated
        if share < limits.idle_cpus:
            flags.append(Flag("idle_cpus", limits.idle_cpus, share,
                              f"{used:g} of {allocated} allocated CPUs used on average ({share:.0%},"
                              f" below {limits.idle_cpus:.0%})"))  # fmt: skip

    per_node = memory_per_node(profile)
    peaks = {node: s["rss_peak"] for node, s in profile.get("nodes", {}).items() if s.get("rss_peak") is not None}
    if per_node and peaks:
        busiest = max(peaks, key=lambda node: peaks[node])
        share = peaks[busiest] / per_node
        if share < limits.low_memory_use:
            flags.append(Flag("low_memory_use", limits.low_memory_use, share,
                              f"peak memory {_mib(peaks[busiest])} of {_mib(per_node)} allocated per node ({share:.1%},"
                              f" below {limits.low_memory_use:.0%})"))  # fmt: skip
        if share > limits.memory_near_limit:
            flags.append(Flag("memory_near_limit", limits.memory_near_limit, share,
                              f"peak memory {_mib(peaks[busiest])} on {busiest} of {_mib(per_node)} allocated"
                              f" ({share:.0%}, above {limits.memory_near_limit:.0%})"))  # fmt: skip

    rates = io_rates(profile)
    heavy = {node: rate for node, rate in rates.items() if rate > limits.io_heavy}
    if heavy:
        worst = max(heavy, key=lambda node: heavy[node])
        flags.append(Flag("io_heavy", limits.io_heavy, heavy[worst],
                          f"{_mib(heavy[worst])}/s read+written on {worst}"
                          f"{f' (and {len(heavy) - 1} more nodes)' if len(heavy) > 1 else ''},"
                          f" above {_mib(limits.io_heavy)}/s"))  # fmt: skip

    duration = profile.get("duration_seconds")
    if duration is not None and duration < limits.short_job:
        flags.append(Flag("short_job", limits.short_job, float(duration),
                          f"ran {duration:g} s, shorter than {limits.short_job:g} s"))  # fmt: skip
    return flags


def _mib(value: float) -> str:
    return f"{value / MIB:.1f} MiB" if value < 1 << 30 else f"{value / (1 << 30):.1f} GiB"
