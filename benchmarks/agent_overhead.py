"""Benchmark 2: the agent's own cost.

``lagent`` with CPUPercent, VirtualMemory, CPUTimes, CPUTimesPercent,
CPUStats, SwapMemory, DiskUsage, DiskIOCounters and NetIOCounters every
second (other settings at their defaults), sending to a real lmaster that
relays to the counting sink; in the same run collectd at ``Interval 1`` with
the equivalent plugins writing to the sink's plaintext port, and a bare
psutil loop (the same psutil calls once a second, nothing else) as the floor.
A second lagent row runs the sensors of the shipped conf/lagent.conf at their
shipped intervals (most at 10 to 30 s), over a longer window: what a node
pays in production.

lagent, the psutil loop and the shipped-conf lagent run as a user runs them:
from a regular (not editable) install of the measured code in a venv of
their own (:func:`benchmarks.servers.regular_install`). The developer's venv
is a heavier place to start a Python process (its editable install's finder
runs at every start): one extra probe starts lagent from there too and
compares VmRSS at the same age, next to a bare interpreter of each venv.

Each is pinned to core 0 in turn, alone; lmaster and the sink sit on core 1.
CPU is (utime + stime) over the window (≥ 60 s in a full run; one clock tick
is 10 ms, so 60 s resolve 0.017 %) after a warm-up; RSS is VmRSS at the end.
Wakeups are the voluntary and involuntary context switches of all the
process's threads over the window, per second: each is a moment the agent
takes a core from the jobs (jitter for tightly coupled codes).
"""

from __future__ import annotations

import configparser
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .measure import (
    LOAD_CPU,
    RELAY_CPU,
    REPO,
    VENV_BIN,
    CpuWindow,
    ForeignWindow,
    Proc,
    WakeupWindow,
    rss_bytes,
    settle,
)
from .servers import (
    Install,
    not_installed,
    regular_install,
    start_collectd,
    start_lagent,
    start_lagent_with,
    start_lmaster,
)
from .sink import CountingSink

CPU_TARGET = 0.12
RSS_TARGET_MB = 20.0
CPU_RATIO_TARGET = 1.25
"""lagent's CPU at most this many times the bare psutil loop's."""
WAKEUPS_TARGET = 3.0
"""Wakeups per second at most, nine sensors at 1 s."""
SHIPPED_WAKEUPS_TARGET = 1.0
"""Wakeups per second at most with the shipped configuration."""
SHIPPED = "lagent, shipped conf"
SHIPPED_CONF = REPO / "conf" / "lagent.conf"
PROBE_AGE = 15.0
"""Seconds after start at which the install-kind probe reads each lagent's VmRSS."""


def measure(label: str, start: Callable[[], Proc], sink: CountingSink, window: float, warmup: float) -> dict:
    """One agent alone on core 0: CPU % of one core, RSS, wakeups, threads, datapoints/s it sent."""
    settle()
    proc = start()
    try:
        time.sleep(warmup)
        counted0 = sink.counted
        foreign = ForeignWindow().start()
        wakeups = WakeupWindow(proc.pid).start()
        cpu = CpuWindow(proc.pid).start()
        deadline = time.monotonic() + window
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            wakeups.poll()
        cpu.stop()
        wakeups.stop()
        foreign.stop()
        counted1 = sink.counted
        rss = rss_bytes(proc.pid)
        alive = proc.running
    finally:
        proc.stop()
    return {
        "agent": label,
        "cpu_percent": cpu.percent,
        "cpu_percent_schedstat": cpu.schedstat_percent,
        "rss_mb": rss / 1e6,
        "wakeups_per_s": wakeups.per_second,
        "threads": wakeups.most_threads,
        "datapoints_per_s": (counted1 - counted0) / cpu.seconds,
        "window_s": cpu.seconds,
        "foreign_percent": foreign.percent,
        "survived": alive,
    }


def start_shipped_lagent(workdir: Path, master_port: int, cpus: set[int] = RELAY_CPU,
                         install: Install | None = None) -> Proc:  # fmt: skip
    """lagent with conf/lagent.conf as shipped, but sending to the benchmark's
    lmaster, with its spool, log and pidfile in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys as written ("time_interval", "maxBytes")
    parser.read(SHIPPED_CONF, encoding="utf-8")
    parser["lmaster"]["host"] = "127.0.0.1"
    parser["lmaster"]["incoming data port"] = str(master_port)
    parser["lagent"]["hostname"] = "shippedagent"
    parser["lagent"]["spool dir"] = str(workdir / "spool-lagent")
    parser["logging"]["filename"] = str(workdir / "lagent.log")
    parser["logging"]["level"] = "WARNING"
    config = workdir / "lagent.conf"
    with config.open("w", encoding="utf-8") as stream:
        parser.write(stream)
    return start_lagent_with(config, workdir, cpus, install)


def bare_interpreter_mb(python: Path, env: dict[str, str]) -> float:
    """VmRSS of ``python -c pass`` (read at its end), least of three: what
    starting an interpreter of that venv costs before any import of ours."""
    script = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
    kib = min(
        int(subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True,
                           env={**os.environ, **env}, cwd=python.parent).stdout)
        for _ in range(3)
    )  # fmt: skip
    return kib * 1024 / 1e6


def rss_at_age(start: Callable[[], Proc], age: float) -> float:
    """VmRSS in MB of an agent ``age`` seconds after ``start`` returned."""
    settle()
    proc = start()
    try:
        time.sleep(age)
        return rss_bytes(proc.pid) / 1e6
    finally:
        proc.stop()


def install_kinds(workdir: Path, port: int, install: Install) -> dict:
    """The same lagent (nine sensors at 1 s) from the regular install and from
    the developer's venv, VmRSS at :data:`PROBE_AGE` s, and each venv's bare
    interpreter: how much of the figure is the install kind."""
    installed = rss_at_age(lambda: start_lagent(workdir / "installed", port, install=install), PROBE_AGE)
    editable = rss_at_age(lambda: start_lagent(workdir / "developer", port), PROBE_AGE)
    return {
        "installed": install.source,
        "probe_age_s": PROBE_AGE,
        "lagent_installed_mb": installed,
        "lagent_developer_venv_mb": editable,
        "bare_python_installed_mb": bare_interpreter_mb(install.python, install.env),
        "bare_python_developer_venv_mb": bare_interpreter_mb(VENV_BIN / "python", {}),
    }


def run(workdir: Path, quick: bool) -> dict:
    window, warmup = (8.0, 2.0) if quick else (60.0, 5.0)
    shipped_window = 20.0 if quick else 90.0
    workdir.mkdir(parents=True, exist_ok=True)
    install = regular_install(workdir / "install")
    rows: list[dict] = []
    with CountingSink() as sink:
        master, port = start_lmaster(workdir / "lmaster", sink.pickle_port, sink.line_port, cpus=LOAD_CPU)
        try:
            print(f"  agent: lagent ({install.source}, regular install), {window:g} s …", flush=True)
            rows.append(measure("lagent", lambda: start_lagent(workdir / "lagent", port, install=install), sink,
                                window, warmup))  # fmt: skip
            skipped = not_installed("collectd")
            if skipped:
                rows.append({"agent": "collectd", "skipped": skipped})
            else:
                print(f"  agent: collectd, {window:g} s …", flush=True)
                rows.append(
                    measure("collectd", lambda: start_collectd(workdir / "collectd", sink.line_port), sink, window,
                            warmup)
                )  # fmt: skip
            print(f"  agent: bare psutil loop, {window:g} s …", flush=True)
            loop_script = Path(__file__).with_name("psutil_loop.py")

            def psutil_loop() -> Proc:
                return Proc("psutil-loop", [str(install.python), str(loop_script)], workdir / "psutil-loop.out",
                            RELAY_CPU, env=install.env)  # fmt: skip

            rows.append(measure("bare psutil loop", psutil_loop, sink, window, warmup))
            print(f"  agent: {SHIPPED}, {shipped_window:g} s …", flush=True)
            rows.append(measure(SHIPPED, lambda: start_shipped_lagent(workdir / "shipped", port, install=install),
                                sink, shipped_window, warmup))  # fmt: skip
            print(f"  agent: lagent's VmRSS at {PROBE_AGE:g} s, regular install and developer's venv …", flush=True)
            kinds = install_kinds(workdir / "kinds", port, install)
        finally:
            master.stop()
    return {"rows": rows, "ratios": ratios(rows), "targets": targets(rows), "install_kinds": kinds}


def ratios(rows: list[dict]) -> list[dict]:
    ours = next((row for row in rows if row["agent"] == "lagent" and "cpu_percent" in row), None)
    if ours is None:
        return []
    return [
        {
            "versus": row["agent"],
            "cpu": ours["cpu_percent"] / row["cpu_percent"] if row["cpu_percent"] else None,
            "rss": ours["rss_mb"] / row["rss_mb"] if row["rss_mb"] else None,
        }
        for row in rows
        if row["agent"] not in ("lagent", SHIPPED) and "cpu_percent" in row
    ]


def targets(rows: list[dict]) -> list[dict]:
    measured = {row["agent"]: row for row in rows if "cpu_percent" in row}
    ours = measured.get("lagent")
    if ours is None:
        return []
    result = [
        {"target": f"agent ≤ {CPU_TARGET} % of one core", "measured": f"{ours['cpu_percent']:.3f} %",
         "pass": ours["cpu_percent"] <= CPU_TARGET},
        {"target": f"agent ≤ {RSS_TARGET_MB:g} MB RSS", "measured": f"{ours['rss_mb']:.1f} MB",
         "pass": ours["rss_mb"] <= RSS_TARGET_MB},
        {"target": f"agent ≤ {WAKEUPS_TARGET:g} wakeups/s (nine sensors at 1 s)",
         "measured": f"{ours['wakeups_per_s']:.2f} /s", "pass": ours["wakeups_per_s"] <= WAKEUPS_TARGET},
    ]  # fmt: skip
    floor = measured.get("bare psutil loop")
    if floor is not None and floor["cpu_percent"]:
        ratio = ours["cpu_percent"] / floor["cpu_percent"]
        result.append({"target": f"agent CPU ≤ {CPU_RATIO_TARGET:g} × the bare psutil loop",
                       "measured": f"{ratio:.2f} ×", "pass": ratio <= CPU_RATIO_TARGET})  # fmt: skip
    collectd = measured.get("collectd")
    if collectd is not None:
        result.append({"target": "agent CPU below collectd's",
                       "measured": f"{ours['cpu_percent']:.3f} % vs {collectd['cpu_percent']:.3f} %",
                       "pass": ours["cpu_percent"] < collectd["cpu_percent"]})  # fmt: skip
    shipped = measured.get(SHIPPED)
    if shipped is not None:
        result.append({"target": f"agent ≤ {SHIPPED_WAKEUPS_TARGET:g} wakeup/s (shipped conf)",
                       "measured": f"{shipped['wakeups_per_s']:.2f} /s",
                       "pass": shipped["wakeups_per_s"] <= SHIPPED_WAKEUPS_TARGET})  # fmt: skip
    return result
