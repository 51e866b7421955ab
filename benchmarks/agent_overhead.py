"""Benchmark 2: the agent's own cost.

``lagent`` with CPUPercent, VirtualMemory, CPUTimes, CPUTimesPercent,
CPUStats, SwapMemory, DiskUsage, DiskIOCounters and NetIOCounters every
second (other settings at their defaults), sending to a real lmaster that
relays to the counting sink; in the same run collectd at ``Interval 1`` with
the equivalent plugins writing to the sink's plaintext port, and a bare
psutil loop (the same psutil calls once a second, nothing else) as the floor.

Each is pinned to core 0 in turn, alone; lmaster and the sink sit on core 1.
CPU is (utime + stime) over the window (≥ 60 s in a full run; one clock tick
is 10 ms, so 60 s resolve 0.017 %) after a warm-up; RSS is VmRSS at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from .measure import LOAD_CPU, RELAY_CPU, CpuWindow, ForeignWindow, Proc, rss_bytes, settle
from .servers import not_installed, start_collectd, start_lagent, start_lmaster
from .sink import CountingSink

CPU_TARGET = 0.12
RSS_TARGET_MB = 20.0


def measure(label: str, start: Callable[[], Proc], sink: CountingSink, window: float, warmup: float) -> dict:
    """One agent alone on core 0: CPU % of one core, RSS, datapoints/s it sent."""
    settle()
    proc = start()
    try:
        time.sleep(warmup)
        counted0 = sink.counted
        foreign = ForeignWindow().start()
        cpu = CpuWindow(proc.pid).start()
        time.sleep(window)
        cpu.stop()
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
        "datapoints_per_s": (counted1 - counted0) / cpu.seconds,
        "window_s": cpu.seconds,
        "foreign_percent": foreign.percent,
        "survived": alive,
    }


def run(workdir: Path, quick: bool) -> dict:
    window, warmup = (8.0, 2.0) if quick else (60.0, 5.0)
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with CountingSink() as sink:
        master, port = start_lmaster(workdir / "lmaster", sink.pickle_port, sink.line_port, cpus=LOAD_CPU)
        try:
            print(f"  agent: lagent, {window:g} s …", flush=True)
            rows.append(measure("lagent", lambda: start_lagent(workdir / "lagent", port), sink, window, warmup))
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
                return Proc("psutil-loop", [sys.executable, str(loop_script)], workdir / "psutil-loop.out", RELAY_CPU)

            rows.append(measure("bare psutil loop", psutil_loop, sink, window, warmup))
        finally:
            master.stop()
    return {"rows": rows, "ratios": ratios(rows), "targets": targets(rows)}


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
        if row["agent"] != "lagent" and "cpu_percent" in row
    ]


def targets(rows: list[dict]) -> list[dict]:
    ours = next((row for row in rows if row["agent"] == "lagent" and "cpu_percent" in row), None)
    if ours is None:
        return []
    return [
        {"target": f"agent ≤ {CPU_TARGET} % of one core", "measured": f"{ours['cpu_percent']:.3f} %",
         "pass": ours["cpu_percent"] <= CPU_TARGET},
        {"target": f"agent ≤ {RSS_TARGET_MB:g} MB RSS", "measured": f"{ours['rss_mb']:.1f} MB",
         "pass": ours["rss_mb"] <= RSS_TARGET_MB},
    ]  # fmt: skip
