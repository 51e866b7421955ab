"""Benchmark 2: the agent's own cost.

``lagent`` with CPUPercent, VirtualMemory, CPUTimes, CPUTimesPercent,
CPUStats, SwapMemory, DiskUsage, DiskIOCounters and NetIOCounters every
second (other settings at their defaults), sending to a real lmaster that
relays to the counting sink; collectd at ``Interval 1`` with the equivalent
plugins writing to a second sink's plaintext port, and a bare psutil loop
(the same psutil calls once a second, nothing else) as the floor. These three
run **side by side, at once**, on core 0 in :data:`ROUNDS` rounds
(:mod:`benchmarks.side_by_side`: why at once, why their wakeups are kept a
third of a second apart, and how that is checked); lmaster, the sinks and
this process sit on core 1. The judged CPU is the scheduler's nanoseconds
(schedstat), utime + stime beside it; the judged ratios are the medians of
the rounds' ratios.

A second lagent row runs the sensors of the shipped conf/lagent.conf at their
shipped intervals (most at 10 to 30 s), alone on core 0 over a longer
window: what a node pays in production.

lagent, the psutil loop and the shipped-conf lagent run as a user runs them:
from a regular (not editable) install of the measured code in a venv of
their own (:func:`benchmarks.servers.regular_install`). The developer's venv
is a heavier place to start a Python process (its editable install's finder
runs at every start): one extra probe starts lagent from there too and
compares VmRSS at the same age, next to a bare interpreter of each venv.

RSS is VmRSS at the end of the window. Wakeups are the voluntary and
involuntary context switches of all the process's threads over the window,
per second: each is a moment the agent takes a core from the jobs (jitter for
tightly coupled codes).
"""

from __future__ import annotations

import configparser
import contextlib
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
    pin_self,
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
from .side_by_side import Contender, measure_round, ratio_summary, round_ratio, summary_row
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
LOOP = "bare psutil loop"
ROUNDS = 6
"""Side-by-side rounds in a full run (each program restarted, start order rotated): each of the three start
orders twice. With three rounds one unlucky round moved the median by 0.05× from run to run."""
WINDOW_S = 60.0
"""Seconds of each round's window, after the warm-up."""
LAUNCH_DELAY = {"lagent": 0.25, "collectd": 0.015}
"""First guesses of the seconds from exec to the first tick (each round learns them again)."""
SHIPPED_CONF = REPO / "conf" / "lagent.conf"
PROBE_AGE = 15.0
"""Seconds after start at which the install-kind probe reads each lagent's VmRSS."""


def measure(label: str, start: Callable[[], Proc], sink: CountingSink, window: float, warmup: float) -> dict:
    """One agent alone on core 0 (the shipped-conf row): CPU % of one core, RSS, wakeups, threads,
    datapoints/s it sent."""
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


def side_by_side_rounds(workdir: Path, install: Install, port: int, sink: CountingSink, window: float,
                        warmup: float, rounds: int, probe_s: float) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """lagent, the bare loop and collectd at once on core 0, ``rounds`` times: (rounds, skipped rows)."""
    loop_script = Path(__file__).with_name("psutil_loop.py")

    def lagent(tag: str, _phase: float | None) -> Proc:
        return start_lagent(workdir / tag / "lagent", port, install=install)

    def psutil_loop(tag: str, phase: float | None) -> Proc:
        return Proc(LOOP, [str(install.python), str(loop_script), f"{phase:.6f}"], workdir / tag / "psutil-loop.out",
                    RELAY_CPU, env=install.env)  # fmt: skip

    skipped = not_installed("collectd")
    with contextlib.ExitStack() as stack:
        contenders = [Contender("lagent", lagent, sink, LAUNCH_DELAY["lagent"]),
                      Contender(LOOP, psutil_loop, None, None)]  # fmt: skip
        if not skipped:
            collectd_sink = stack.enter_context(CountingSink())

            def collectd(tag: str, _phase: float | None) -> Proc:
                return start_collectd(workdir / tag / "collectd", collectd_sink.line_port)

            contenders.append(Contender("collectd", collectd, collectd_sink, LAUNCH_DELAY["collectd"]))
        records = []
        for index in range(rounds):
            print(f"  agent: round {index + 1} of {rounds}, {', '.join(c.label for c in contenders)} at once, "
                  f"{window:g} s …", flush=True)  # fmt: skip
            record = measure_round(contenders, index, window, warmup, probe_s)
            print(f"    {describe_round(record)}", flush=True)
            records.append(record)
    return records, ([{"agent": "collectd", "skipped": skipped}] if skipped else [])


def describe_round(record: dict) -> str:
    """One line: start order, phases, each program's CPU, the round's ratios."""
    phases = ", ".join(f"{label} {ms:.0f}" for label, ms in record["phase_ms"].items())
    cpu = "; ".join(f"{label} {agent['cpu_percent_schedstat']:.3f} % ({agent['cpu_percent']:.3f})"
                    for label, agent in record["agents"].items())  # fmt: skip
    ratios = ", ".join(f"/{other} {number:.2f}×" for other in (LOOP, "collectd")
                       if (number := round_ratio(record, "lagent", other)) is not None)  # fmt: skip
    return (f"phases ms {phases} (closest {record['closest_ms']:.0f}, after {record['closest_ms_after']:.0f}, "
            f"restarts {record['restarts']}); CPU schedstat (ticks): {cpu}; lagent {ratios}; "
            f"others {record['foreign_percent']:.1f} %")  # fmt: skip


def run(workdir: Path, quick: bool) -> dict:
    window, warmup, rounds, probe_s = (8.0, 2.0, 2, 1.0) if quick else (WINDOW_S, 5.0, ROUNDS, 2.0)
    shipped_window = 20.0 if quick else 90.0
    workdir.mkdir(parents=True, exist_ok=True)
    install = regular_install(workdir / "install")
    cores = os.sched_getaffinity(0)
    pin_self(LOAD_CPU)  # the phase probes and window polls stay off the measured core
    try:
        with CountingSink() as sink:
            master, port = start_lmaster(workdir / "lmaster", sink.pickle_port, sink.line_port, cpus=LOAD_CPU)
            try:
                print(f"  agent: lagent ({install.source}, regular install), the bare psutil loop and collectd side "
                      f"by side on core 0, {rounds} rounds …", flush=True)  # fmt: skip
                records, skipped = side_by_side_rounds(workdir / "side", install, port, sink, window, warmup, rounds,
                                                       probe_s)  # fmt: skip
                labels = records[0]["agents"]
                rows = [summary_row(label, records) for label in ("lagent", "collectd", LOOP) if label in labels]
                rows += skipped
                print(f"  agent: {SHIPPED}, alone, {shipped_window:g} s …", flush=True)
                rows.append(measure(SHIPPED, lambda: start_shipped_lagent(workdir / "shipped", port, install=install),
                                    sink, shipped_window, warmup))  # fmt: skip
                print(f"  agent: lagent's VmRSS at {PROBE_AGE:g} s, regular install and developer's venv …", flush=True)
                kinds = install_kinds(workdir / "kinds", port, install)
            finally:
                master.stop()
    finally:
        pin_self(cores)
    ratios = [ratio_summary(records, "lagent", label) for label in (LOOP, "collectd") if label in labels]
    return {"rows": rows, "rounds": records, "ratios": ratios, "targets": targets(rows, ratios), "install_kinds": kinds}


def targets(rows: list[dict], ratios: list[dict]) -> list[dict]:
    """lagent's figures against the targets: CPU from schedstat, the median of the side-by-side rounds."""
    measured = {row["agent"]: row for row in rows if "cpu_percent" in row}
    ours = measured.get("lagent")
    if ours is None:
        return []
    cpu = ours["cpu_percent_schedstat"]
    result = [
        {"target": f"agent ≤ {CPU_TARGET} % of one core", "measured": f"{cpu:.3f} % (schedstat, median of rounds)",
         "pass": cpu <= CPU_TARGET},
        {"target": f"agent ≤ {RSS_TARGET_MB:g} MB RSS", "measured": f"{ours['rss_mb']:.1f} MB",
         "pass": ours["rss_mb"] <= RSS_TARGET_MB},
        {"target": f"agent ≤ {WAKEUPS_TARGET:g} wakeups/s (nine sensors at 1 s)",
         "measured": f"{ours['wakeups_per_s']:.2f} /s", "pass": ours["wakeups_per_s"] <= WAKEUPS_TARGET},
    ]  # fmt: skip
    against = {ratio["versus"]: ratio for ratio in ratios if ratio["cpu"] is not None}

    def rounds(ratio: dict) -> str:
        return ", ".join(f"{value:.2f}" for value in ratio["cpu_rounds"])

    floor = against.get(LOOP)
    if floor is not None:
        result.append({"target": f"agent CPU ≤ {CPU_RATIO_TARGET:g} × the bare psutil loop",
                       "measured": f"{floor['cpu']:.2f} × (median; rounds {rounds(floor)})",
                       "pass": floor["cpu"] <= CPU_RATIO_TARGET})  # fmt: skip
    collectd = against.get("collectd")
    if collectd is not None:
        result.append({"target": "agent CPU below collectd's",
                       "measured": f"{collectd['cpu']:.2f} × collectd's (median; rounds {rounds(collectd)})",
                       "pass": collectd["cpu"] < 1.0})  # fmt: skip
    shipped = measured.get(SHIPPED)
    if shipped is not None:
        result.append({"target": f"agent ≤ {SHIPPED_WAKEUPS_TARGET:g} wakeup/s (shipped conf)",
                       "measured": f"{shipped['wakeups_per_s']:.2f} /s",
                       "pass": shipped["wakeups_per_s"] <= SHIPPED_WAKEUPS_TARGET})  # fmt: skip
    return result
