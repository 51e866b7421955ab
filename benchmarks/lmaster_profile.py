"""Where lmaster spends its time: py-spy under the relay load, and its
garbage collections under relay and fan-in load.

1. Relay load (16 connections, as benchmark 1) against lmaster started
   through :mod:`benchmarks.gc_probe`; py-spy (``pip install py-spy``, pinned
   to the load core, ``--nonblocking``) samples it at 100 Hz for the window.
   The raw stacks are reduced to the top functions by own samples ("self")
   and by samples anywhere in the stack ("total").
2. The fan-in benchmark again (short window) with the GC probe: how long
   the collections of each generation take and how often, the share of the
   window they took, what cyclic garbage lmaster made (the probe's census),
   next to the delays; and py-spy over the same window.
"""

from __future__ import annotations

import collections
import json
import subprocess
import time
from pathlib import Path

from . import fanin
from .measure import LOAD_CPU, VENV_BIN, CpuWindow
from .relay import MANY, sender_specs
from .senders import Senders
from .servers import start_lmaster
from .sink import CountingSink

TOP = 15


def top_functions(raw: str, top: int = TOP) -> dict:
    """Top functions by self samples, and by total samples (anywhere in the
    stack; those in nearly every stack left out), from py-spy's raw
    (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame.strip() for frame in stack.split(";") if frame.strip()]
        if not frames:
            continue
        samples += count
        own[_short(frames[-1])] += count
        for name in {_short(frame) for frame in frames}:
            total[name] += count
    for name, n in list(total.items()):
        if n >= 0.9 * samples:  # the event loop's and runpy's frames, in (nearly) every stack
            del total[name]

    def table(counter: collections.Counter[str]) -> list[dict]:
        return [{"function": name, "percent": 100.0 * n / samples} for name, n in counter.most_common(top)]

    return {"samples": samples, "self": table(own), "total": table(total)}


def _short(frame: str) -> str:
    """``func (/long/path/fructosa/master/flow.py:123)`` → ``func (fructosa/master/flow.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    if "/fructosa/" in path:  # any checkout or --commit snapshot
        return f"{name} (fructosa/{path.rsplit('/fructosa/', 1)[1]})"
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


def gc_summary(path: Path, since: float = 0.0, until: float | None = None) -> dict:
    """Collections per generation: count, total and worst milliseconds; with
    ``until``, the share of the window spent collecting (% of wall time)."""
    if not path.exists():
        return {}
    probe = json.loads(path.read_text())
    events = [event for event in probe["events"] if event["at"] >= since and (until is None or event["at"] <= until)]
    result: dict = {"thresholds": probe.get("thresholds")}
    if until is not None:
        result["gc_time_percent"] = 100.0 * sum(event["ms"] for event in events) / 1000 / max(until - since, 1e-9)
    if probe.get("census"):
        census = probe["census"]
        result["cyclic_garbage"] = {"objects": census.get("objects"), "types": census.get("types")}
        result["old_generation"] = {"objects": census.get("old_generation"), "frozen": census.get("frozen"),
                                    "types": census.get("old_generation_types")}  # fmt: skip
    for generation in (0, 1, 2):
        durations = [event["ms"] for event in events if event["generation"] == generation]
        if durations:
            result[f"gen{generation}"] = {"count": len(durations), "total_ms": sum(durations), "max_ms": max(durations)}
    full = sorted(event["at"] for event in events if event["generation"] == 2)
    if len(full) > 1:
        result["gen2_every_s"] = (full[-1] - full[0]) / (len(full) - 1)
    return result


def run(workdir: Path, quick: bool) -> dict:
    duration = 10 if quick else 20
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    if not (VENV_BIN / "py-spy").exists():
        result["py_spy"] = "skipped (not installed: .venv/bin/pip install py-spy)"
    relay_dir = workdir / "relay"
    relay_dir.mkdir(parents=True, exist_ok=True)
    with CountingSink() as sink:
        master, port = start_lmaster(relay_dir, sink.pickle_port, sink.line_port, gc_probe=True)
        senders = Senders(sender_specs("fructosa", port, MANY))
        try:
            senders.wait_ready()
            senders.start()
            time.sleep(2)
            print(f"  profile: py-spy on lmaster under relay load, {duration} s …", flush=True)
            since, counted0 = time.time(), sink.counted
            cpu = CpuWindow(master.pid).start()
            if "py_spy" not in result:
                raw_path = workdir / "lmaster-relay.pyspy.txt"
                command = [str(VENV_BIN / "py-spy"), "record", "--pid", str(master.pid), "--duration", str(duration),
                           "--rate", "100", "--format", "raw", "--nonblocking", "--output", str(raw_path)]  # fmt: skip
                spy = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60,
                                     preexec_fn=lambda: __import__("os").sched_setaffinity(0, LOAD_CPU))  # fmt: skip
                if spy.returncode == 0 and raw_path.exists():
                    result["py_spy"] = top_functions(raw_path.read_text())
                    result["py_spy"]["raw"] = str(raw_path)
                else:
                    result["py_spy"] = f"failed: {(spy.stderr or spy.stdout).strip()[-500:]}"
            else:
                time.sleep(duration)
            cpu.stop()
            result["relay_rate_while_profiled"] = (sink.counted - counted0) / cpu.seconds
            result["relay_cpu_percent"] = cpu.percent
        finally:
            senders.finish()
            senders.terminate()
            master.stop()
    result["relay_gc"] = gc_summary(relay_dir / "gc.json", since)
    result["relay_gc_seconds"] = cpu.seconds
    print("  profile: fan-in with the GC probe …", flush=True)
    fan_dir = workdir / "fanin"
    fan_raw = fan_dir / "lmaster-fanin.pyspy.txt"
    spy_installed = (VENV_BIN / "py-spy").exists()
    fan = fanin.run(fan_dir, quick=True, gc_probe=True, py_spy=fan_raw if spy_installed else None)
    row = fan["rows"][0]
    result["fanin"] = {key: row[key] for key in ("cpu_percent", "delay_p50_ms", "delay_p99_ms", "delay_max_ms",
                                                "delay_over_target_percent", "slow_seconds", "window_s",
                                                "foreign_percent")}  # fmt: skip
    result["fanin_gc"] = gc_summary(fan_dir / "gc.json", *row["window_at"])
    if fan_raw.exists():
        result["fanin_py_spy"] = top_functions(fan_raw.read_text())
        result["fanin_py_spy"]["raw"] = str(fan_raw)
    return result
