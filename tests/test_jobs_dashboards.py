"""Slurm jobs on the dashboards: the node's active-jobs panels and the per-job dashboard.

The live check (every job-dashboard target returns a real job's data from
graphite-web) is in test_slurm_master.py, which has a real Slurm job at hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fructosa.dashboards import metrics as m
from fructosa.dashboards.cli import main
from fructosa.dashboards.jobs import job_dashboard
from fructosa.dashboards.node import node_dashboard
from fructosa.dashboards.settings import Settings
from tests.dashboards.helpers import glob_matches, golden_sensor_paths, model_targets


def test_node_dashboard_shows_the_active_jobs() -> None:
    board = node_dashboard("node01", Settings.from_options("hpc", "3h", "1m"))
    targets = {title: target.target for title, target in model_targets(board)}
    assert targets["Slurm jobs"] == "alias(hpc.node01.SlurmJobs.count,'jobs')"
    assert targets["CPU per Slurm job"] == "aliasByNode(hpc.node01.SlurmJobs.job_*.cpu_percent,3)"
    rows = [panel.title for panel in board.panels if panel.to_json_data()["type"] == "row"]
    assert rows.index("Processes") < rows.index("Disk")


def test_job_dashboard_selects_one_job_on_every_node() -> None:
    board = job_dashboard(Settings.from_options("hpc", "3h", "1m"))
    (variable,) = [var for var in board.templating.list if var.name == "job"]
    assert variable.query == "hpc.*.SlurmJobs.job_*"
    targets = [target.target for _, target in model_targets(board)]
    assert len(targets) == 5
    for target in targets:
        assert target.startswith("aliasByNode(hpc.*.SlurmJobs.$job.") and target.endswith(",1)"), target
    # each field the job dashboard asks for is one the SlurmJobs sensor sends for a job
    sent = golden_sensor_paths()["SlurmJobs"]
    for target in targets:
        field = target.split("$job.")[1].split(",")[0]
        assert any(glob_matches(f"node01.SlurmJobs.job_*.{field}", path) for path in sent), field


def test_command_writes_the_job_dashboard_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("[hosts]\nnode01\n")
    assert main([str(hosts), "-o", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "jobs.json").exists()
    assert main([str(hosts), "--jobs", "-o", str(tmp_path / "out")]) == 0
    assert "1 node dashboards, jobs.json and cluster.json written" in capsys.readouterr().out
    written = json.loads((tmp_path / "out" / "jobs.json").read_text())
    assert written["title"] == "FrUCToSA Slurm job" and written["uid"] == "fructosa-slurm-job"
    hosts.write_text("[hosts]\njobs\n")
    assert main([str(hosts), "--jobs", "-o", str(tmp_path / "clash")]) == 2
    assert "a host named 'jobs' would overwrite jobs.json" in capsys.readouterr().err


def test_job_metrics_are_declared_once() -> None:
    assert m.SLURM_JOB_CPU.keys[0] == m.SLURM_JOB == "job_*"


def test_job_dashboard_only_for_agents_running_slurm_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("[hosts]\nnode01\n")
    with_slurm, without_slurm = tmp_path / "with.conf", tmp_path / "without.conf"
    with_slurm.write_text("[sensor:CPUPercent]\n[sensor:SlurmJobs]\n")
    without_slurm.write_text("[sensor:CPUPercent]\n[sensor:TopProcesses]\n")
    assert main([str(hosts), "--jobs", "-o", str(tmp_path / "all")]) == 0
    assert main([str(hosts), "--jobs", "--agent-config", str(with_slurm), "-o", str(tmp_path / "with")]) == 0
    assert (tmp_path / "with" / "jobs.json").read_text() == (tmp_path / "all" / "jobs.json").read_text()
    capsys.readouterr()
    assert main([str(hosts), "--jobs", "--agent-config", str(without_slurm), "-o", str(tmp_path / "without")]) == 0
    out, err = capsys.readouterr()
    assert err == f"make-fructosa-dashboard: {without_slurm} runs no SlurmJobs sensor: jobs.json not written (--jobs)\n"
    assert out == f"1 node dashboards and cluster.json written to {tmp_path / 'without'}\n"
    assert sorted(path.name for path in (tmp_path / "without").iterdir()) == ["cluster.json", "node01.json"]
    node = json.loads((tmp_path / "without" / "node01.json").read_text())
    processes = [panel["title"] for panel in node["panels"] if panel["type"] != "row" and "Slurm" in panel["title"]]
    assert processes == ["Pids and Slurm jobs of the top processes"]  # TopProcesses, not SlurmJobs
    assert "SlurmJobs" not in (tmp_path / "without" / "node01.json").read_text()
