"""Efficiency flags of a job profile (fructosa/jobs/flags.py) and where the memory allocation comes from.

The flags are a pure function of the profile, so each rule is checked as a
property: over generated profiles, a flag is raised exactly when its
condition holds, with the threshold and the figure that decided it. The
real-Slurm side (a burner job without ``idle_cpus``, a ``sleep`` job with
it) is in tests/test_slurm_master.py.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fructosa.jobs.allocation import config_value, jobcomp_tres, tres_memory
from fructosa.jobs.flags import MIB, Flag, FlagThresholds, job_flags
from fructosa.jobs.report import format_text

GIB = 1 << 30


def profile(**overrides: Any) -> dict[str, Any]:
    """A plausible two-node, 8-CPU, 16 GiB job that raises no flag; overrides replace top-level keys."""
    node = {
        "samples": 120, "cpu_percent_mean": 350.0, "cpu_percent_peak": 400.0, "rss_mean": 3 * GIB,
        "rss_peak": 4 * GIB, "processes_peak": 5, "read_bytes": 10 * MIB, "write_bytes": 5 * MIB,
    }  # fmt: skip
    base = {
        "job_id": "42", "name": "sim", "user": "alice", "partition": "batch", "state": "COMPLETED",
        "start": 1_800_000_000.0, "end": 1_800_003_600.0, "duration_seconds": 3600.0,
        "allocated_cpus": 8, "used_cpus_mean": 7.0, "cpu_efficiency_percent": 87.5, "rss_peak": 4 * GIB,
        "read_bytes": 20 * MIB, "write_bytes": 10 * MIB, "allocated_memory_bytes": 16 * GIB,
        "nodes": {"n01": dict(node), "n02": dict(node)}, "nodes_without_data": [],
    }  # fmt: skip
    return {**base, **overrides}


def names(flags: list[Flag]) -> list[str]:
    return [flag.name for flag in flags]


def test_a_healthy_job_raises_nothing_and_each_rule_has_its_figure() -> None:
    assert job_flags(profile()) == []
    (idle,) = job_flags(profile(used_cpus_mean=0.24))
    assert (idle.name, idle.threshold, idle.value) == ("idle_cpus", 0.25, 0.03)
    assert idle.message == "0.24 of 8 allocated CPUs used on average (3%, below 25%)"
    assert idle.as_json() == {"name": "idle_cpus", "threshold": 0.25, "value": 0.03, "message": idle.message}

    # 16 GiB over two nodes is 8 GiB per node: the busiest node's peak decides.
    small = {"rss_peak": 700 * MIB, "read_bytes": 0, "write_bytes": 0}
    (low,) = job_flags(profile(nodes={"n01": small, "n02": {**small, "rss_peak": 100 * MIB}}))
    assert (low.name, low.value) == ("low_memory_use", 700 / 8192)
    near = {"rss_peak": int(7.5 * GIB), "read_bytes": 0, "write_bytes": 0}
    (limit,) = job_flags(profile(nodes={"n01": small, "n02": near}))
    assert limit.name == "memory_near_limit" and "on n02" in limit.message and limit.value == 7.5 / 8
    # A node that sent no data still holds its share of the allocation.
    (low,) = job_flags(profile(nodes={"n01": {**near, "rss_peak": 800 * MIB}}, nodes_without_data=["n02"]))
    assert low.name == "low_memory_use" and low.value == 800 / 8192

    heavy = {"rss_peak": 4 * GIB, "read_bytes": 3600 * 200 * MIB, "write_bytes": 0}
    (io,) = job_flags(profile(nodes={"n01": heavy, "n02": {**heavy, "read_bytes": 3600 * 300 * MIB}}))
    assert (io.name, io.threshold, io.value) == ("io_heavy", 100 * MIB, 300 * MIB)
    assert io.message == "300.0 MiB/s read+written on n02 (and 1 more nodes), above 100.0 MiB/s"

    (short,) = job_flags(profile(duration_seconds=12.5))
    assert (short.name, short.value, short.message) == ("short_job", 12.5, "ran 12.5 s, shorter than 60 s")


def test_missing_figures_raise_no_flag() -> None:
    blank = {"rss_peak": None, "read_bytes": None, "write_bytes": None}
    assert job_flags(profile(used_cpus_mean=None, allocated_memory_bytes=None, nodes={"n01": blank})) == []
    assert job_flags(profile(allocated_cpus=None, used_cpus_mean=0.0)) == []
    assert job_flags(profile(allocated_cpus=0, used_cpus_mean=0.0)) == []
    assert job_flags(profile(allocated_memory_bytes=None, nodes={"n01": {**blank, "rss_peak": 1}})) == []


def test_thresholds_are_documented_checked_and_overridable() -> None:
    for spec in dataclasses.fields(FlagThresholds):
        assert spec.metadata["doc"] and spec.metadata["unit"] in ("fraction", "bytes/s", "seconds"), spec.name
        assert "\n" not in spec.metadata["doc"]
    assert names(job_flags(profile(), FlagThresholds(idle_cpus=0.9, short_job=7200))) == ["idle_cpus", "short_job"]
    with pytest.raises(ValueError, match=r"^threshold idle_cpus = 1.5: a fraction must be above 0 and at most 1$"):
        FlagThresholds(idle_cpus=1.5)
    with pytest.raises(ValueError, match=r"^threshold short_job = -1 must not be negative$"):
        FlagThresholds(short_job=-1)
    with pytest.raises(ValueError, match=r"^threshold io_heavy must be a number, not nan$"):
        FlagThresholds(io_heavy=float("nan"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        FlagThresholds().idle_cpus = 0.5  # type: ignore[misc]


# -- each flag raised iff its condition holds ----------------------------------

sizes = st.one_of(st.none(), st.integers(min_value=0, max_value=1 << 42))
node_summaries = st.fixed_dictionaries({"rss_peak": sizes, "read_bytes": sizes, "write_bytes": sizes})
profiles = st.fixed_dictionaries(
    {
        "duration_seconds": st.floats(min_value=0, max_value=1e6),
        "allocated_cpus": st.one_of(st.none(), st.integers(min_value=0, max_value=512)),
        "used_cpus_mean": st.one_of(st.none(), st.floats(min_value=0, max_value=600)),
        "allocated_memory_bytes": st.one_of(st.none(), st.integers(min_value=0, max_value=1 << 44)),
        "nodes": st.dictionaries(st.sampled_from(["n01", "n02", "n03", "n04"]), node_summaries, min_size=1),
        "nodes_without_data": st.lists(st.sampled_from(["x1", "x2"]), max_size=2, unique=True),
    }
)
thresholds = st.builds(
    FlagThresholds,
    idle_cpus=st.floats(min_value=0.01, max_value=1),
    low_memory_use=st.floats(min_value=0.01, max_value=1),
    memory_near_limit=st.floats(min_value=0.01, max_value=1),
    io_heavy=st.floats(min_value=0, max_value=1e10),
    short_job=st.floats(min_value=0, max_value=1e5),
)


def expected(job: dict[str, Any], limits: FlagThresholds) -> dict[str, float]:
    """The rules as the README states them: flag name → the figure compared with its threshold."""
    raised = {}
    if job["used_cpus_mean"] is not None and job["allocated_cpus"]:
        share = job["used_cpus_mean"] / job["allocated_cpus"]
        if share < limits.idle_cpus:
            raised["idle_cpus"] = share
    peaks = [node["rss_peak"] for node in job["nodes"].values() if node["rss_peak"] is not None]
    if job["allocated_memory_bytes"] and peaks:
        per_node = job["allocated_memory_bytes"] / (len(job["nodes"]) + len(job["nodes_without_data"]))
        share = max(peaks) / per_node
        if share < limits.low_memory_use:
            raised["low_memory_use"] = share
        if share > limits.memory_near_limit:
            raised["memory_near_limit"] = share
    rates = [
        ((node["read_bytes"] or 0) + (node["write_bytes"] or 0)) / max(job["duration_seconds"], 1.0)
        for node in job["nodes"].values()
        if node["read_bytes"] is not None or node["write_bytes"] is not None
    ]
    if rates and max(rates) > limits.io_heavy:
        raised["io_heavy"] = max(rates)
    if job["duration_seconds"] < limits.short_job:
        raised["short_job"] = job["duration_seconds"]
    return raised


@settings(max_examples=300, deadline=None)
@given(profiles, thresholds)
def test_each_flag_is_raised_iff_its_condition_holds(job: dict[str, Any], limits: FlagThresholds) -> None:
    flags = job_flags(job, limits)
    want = expected(job, limits)
    assert names(flags) == list(want)  # in FlagThresholds' order, each at most once
    for flag in flags:
        assert flag.threshold == getattr(limits, flag.name)
        assert flag.value == pytest.approx(want[flag.name], rel=1e-9)
        assert flag.message
        json.dumps(flag.as_json(), allow_nan=False)


# -- the memory allocation, from recorded Slurm output --------------------------

JOBCOMP = (
    "JobId=2 UserId=root(0) GroupId=root(0) Name=b JobState=REQUEUED Partition=debug NodeList=vm NodeCnt=1 "
    "ProcCnt=1 Tres=cpu=1,mem=50M,node=1,billing=1 Account= QOS=\n"
    "JobId=21 UserId=root(0) Name=c JobState=COMPLETED Tres=cpu=1,mem=9G,node=1 Account=\n"
    "JobId=2 UserId=root(0) GroupId=root(0) Name=b JobState=COMPLETED Partition=debug NodeList=vm NodeCnt=1 "
    "ProcCnt=1 WorkDir=/tmp ReservationName= Tres=cpu=1,mem=100M,node=1,billing=1 Account= QOS=\n"
)


def test_allocated_memory_from_tres_and_the_jobcomp_log() -> None:
    assert tres_memory("billing=1,cpu=4,mem=16G,node=1") == 16 * GIB
    assert tres_memory("cpu=1,mem=1.5T") == int(1.5 * (1 << 40))
    assert tres_memory("cpu=1,mem=24105M,node=1") == 24105 * MIB
    assert tres_memory("mem=512") == 512 * MIB  # Slurm's default unit
    assert tres_memory("cpu=2,node=1") is None and tres_memory("") is None
    assert tres_memory("gres/gpumem=4G,cpu=1") is None  # not the job's memory
    assert jobcomp_tres(JOBCOMP.splitlines(), "2") == "cpu=1,mem=100M,node=1,billing=1"  # the last record
    assert jobcomp_tres(JOBCOMP.splitlines(), "21") == "cpu=1,mem=9G,node=1"
    assert jobcomp_tres(JOBCOMP.splitlines(), "7") is None
    config = "JobCompHost             = localhost\nJobCompLoc              = /var/log/slurm/jobcomp.txt\n"
    assert config_value(config, "JobCompLoc") == "/var/log/slurm/jobcomp.txt"
    assert config_value(config, "JobCompType") is None


def test_text_report_lists_the_flags() -> None:
    job = profile(used_cpus_mean=0.5, duration_seconds=30.0, allocated_memory_bytes=None, end=1_800_000_030.0)
    job["flags"] = [flag.as_json() for flag in job_flags(job)]
    text = format_text(job)
    assert "memory peak 4.0 GiB of an allocation Slurm did not record" in text
    assert "  flag idle_cpus: 0.5 of 8 allocated CPUs used on average (6%, below 25%)\n" in text
    assert "  flag short_job: ran 30 s, shorter than 60 s\n  n01: CPU mean 350.0 %" in text
    assert "flags: none" in format_text({**profile(), "flags": []})


def test_bad_threshold_option_is_one_clear_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fructosa.jobs.report", "1", "--memory-near-limit", "90"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "fructosa-job-report: error: threshold memory_near_limit = 90.0: a fraction must be above 0 and at most 1"
    )
