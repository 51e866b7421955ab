"""lmaster's ``[jobs]`` section: what its job memory keeps, and where each efficiency flag starts.

The flag thresholds are one key per field of
:class:`fructosa.jobs.flags.FlagThresholds`, their docs from the fields'
metadata, so the API's flags and ``fructosa-job-report``'s (whose command
line options come from the same fields) cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..jobs.flags import FlagThresholds
from ..jobs.tracker import POINT_BYTES, JobLimits
from .schema import Key, Section
from .values import format_size, parse_positive_float, parse_positive_int, parse_size


@dataclass(frozen=True)
class JobsConfig:
    """``[jobs]``: the job memory's bounds (:class:`~fructosa.jobs.tracker.JobLimits`) and the flag thresholds."""

    max_ended: int = 1000
    keep_ended: float = 86_400.0
    series_points: int = 120
    series_memory: int = 48 << 20
    thresholds: FlagThresholds = FlagThresholds()

    def limits(self) -> JobLimits:
        return JobLimits(series_points=self.series_points, max_points=max(1, self.series_memory // POINT_BYTES),
                         max_ended=self.max_ended, keep_ended=self.keep_ended)  # fmt: skip


def _threshold_parser(unit: str):  # noqa: ANN202
    def parse(text: str) -> float:
        value = float(parse_size(text)) if unit == "bytes/s" else parse_positive_float(text)
        if unit == "fraction" and value > 1:
            raise ValueError("a fraction above 0 and at most 1")
        return value

    return parse


def _format_threshold(unit: str):  # noqa: ANN202
    return (lambda value: format_size(int(value))) if unit == "bytes/s" else (lambda value: f"{value:g}")


def parse_series_points(text: str) -> int:
    value = parse_positive_int(text)
    if value < 4 or value % 2:
        raise ValueError("an even number of at least 4")
    return value


JOBS = Section(
    "jobs",
    doc="lmaster's job memory (with [http]: /api/jobs and the jobs page): running and recently ended Slurm jobs"
    " from the SlurmJobs samples and the [slurm] poller, each job's series downsampled to a few points, and the"
    " efficiency flags of ended jobs (the same rules and defaults as fructosa-job-report).",
    keys=(
        Key("max ended jobs", "jobs.max_ended", parse_positive_int, "ended jobs kept (the oldest leave first)"),
        Key("keep ended", "jobs.keep_ended", parse_positive_float, "seconds an ended job is kept (86400: a day)"),
        Key("series points", "jobs.series_points", parse_series_points,
            "points kept per job, node and metric; a longer job's points are merged pairwise (even, at least 4)"),
        Key("series memory", "jobs.series_memory", parse_size,
            "memory for all jobs' series (24 bytes a point); past it the oldest ended jobs' series go (their"
            " profile is kept)", format=format_size),
        *(
            Key(spec.name.replace("_", " "), f"jobs.thresholds.{spec.name}", _threshold_parser(spec.metadata["unit"]),
                f"{spec.metadata['doc']} ({spec.metadata['unit']})", format=_format_threshold(spec.metadata["unit"]))
            for spec in fields(FlagThresholds)
        ),
    ),
)  # fmt: skip
