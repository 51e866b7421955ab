"""Benchmark: ``make-fructosa-dashboard`` for a 1,000-host inventory, as a user runs it.

A generated Ansible inventory (``[compute]`` of 1,000 hosts written as ranges of
fully qualified names, 100 of them also in a ``[gpu]`` section) goes through
the installed console script in a fresh process each time, so the figure
includes the interpreter's start-up and every import. Wall time from start to
exit, several runs: the best is what the command costs on a quiet machine, the
median shows how stable that is. The run checks the command's exit status and
that every dashboard was written, so a fast failure is not mistaken for speed.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

from .measure import LOAD_CPU, VENV_BIN, child_pythonpath

HOSTS = 1000
GPU_HOSTS = 100
TARGET_S = 5.0


def write_inventory(path: Path, hosts: int = HOSTS, gpu_hosts: int = GPU_HOSTS) -> None:
    """An inventory as a site writes one: ranges of FQDNs with Ansible variables, a GPU section."""
    racks = [(first, min(first + 99, hosts)) for first in range(1, hosts + 1, 100)]
    lines = ["[compute]"]
    lines += [f"node[{first:04d}:{last:04d}].cluster.example.org ansible_user=root" for first, last in racks]
    lines += ["", "[compute:vars]", "ansible_python_interpreter=/usr/bin/python3", "", "[gpu]"]
    lines += [f"node[{hosts - gpu_hosts + 1:04d}:{hosts:04d}].cluster.example.org"]
    path.write_text("\n".join(lines) + "\n")


def run(workdir: Path, quick: bool) -> dict:
    runs = 3 if quick else 7
    workdir.mkdir(parents=True, exist_ok=True)
    inventory = workdir / "hosts.ini"
    write_inventory(inventory)
    command = [str(VENV_BIN / "make-fructosa-dashboard"), str(inventory), "-s", "compute", "--gpu-section", "gpu",
               "--prefix", "fructosa"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    walls: list[float] = []
    cpus: list[float] = []
    print(f"  dashboards: make-fructosa-dashboard, {HOSTS:,} hosts, {runs} runs …", flush=True)
    for index in range(runs):
        output = workdir / f"out{index}"
        cpu_before, started = _children_cpu(), time.perf_counter()
        process = subprocess.Popen(
            [*command, "-o", str(output)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=lambda: os.sched_setaffinity(0, LOAD_CPU),
        )  # fmt: skip
        stdout, stderr = process.communicate(timeout=300)
        walls.append(time.perf_counter() - started)
        cpus.append(_children_cpu() - cpu_before)
        written = len(list(output.glob("*.json")))
        if process.returncode != 0 or written != HOSTS + 1:
            raise RuntimeError(f"exit {process.returncode}, {written} files: {stderr.decode()[-500:]}")
        last_stdout = stdout.decode().strip()
    sizes = sum(path.stat().st_size for path in (workdir / "out0").glob("*.json"))
    row = {
        "hosts": HOSTS,
        "gpu_hosts": GPU_HOSTS,
        "runs": runs,
        "best_s": min(walls),
        "median_s": statistics.median(walls),
        "worst_s": max(walls),
        "walls_s": walls,
        "cpu_s_median": statistics.median(cpus),
        "written_mb": sizes / 1e6,
        "output": last_stdout,
    }
    target = {
        "target": f"make-fructosa-dashboard, {HOSTS:,} hosts < {TARGET_S:g} s",
        "measured": f"{row['best_s']:.2f} s best, {row['median_s']:.2f} s median",
        "pass": row["median_s"] < TARGET_S,
    }
    return {"rows": [row], "targets": [target]}


def _children_cpu() -> float:
    """CPU seconds (user + system) of the reaped children so far."""
    times = os.times()
    return times.children_user + times.children_system
