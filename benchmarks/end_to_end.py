"""Benchmark 4: end to end into a real carbon-cache.

Simulated agents (8 connections, agent protocol, window of 32) → lmaster
(core 0) → carbon-cache (``tests.support.carbon.CarbonCache``: whisper
1 s points for 2 h, no update/create limits, core 1 with the senders).
Each connection has its own 500 paths and stamps batch N with ``T0 + N``
seconds (T0 two hours ago), so every datapoint is a distinct whisper point
and the points in the files can be counted.

Reported: what lmaster handed to carbon (acknowledged datapoints/s: a batch
is acknowledged once written to carbon's socket), what carbon-cache received
and committed to whisper per second (its own instrumentation, every 5 s),
both processes' CPU % and RSS, and after the senders stop, the time until
every datapoint is in whisper and how many are (counted in the files).
Where the bottleneck sits shows in which process runs at 100 % of its core.
"""

from __future__ import annotations

import time
from pathlib import Path

import whisper

from tests.support.carbon import CarbonCache

from .measure import LOAD_CPU, CpuWindow, ForeignWindow, pin, rss_bytes
from .senders import Senders, SenderSpec
from .servers import start_lmaster

CONNECTIONS = 8
RETENTION_S = 7200
METRIC_INTERVAL = 5


def whisper_points(data_dir: Path, prefix: str = "bench") -> int:
    """Non-empty points in the whisper files of the benchmark's paths (``prefix*``)."""
    total = 0
    for directory in data_dir.glob(f"{prefix}*"):
        for wsp in directory.rglob("*.wsp"):
            if wsp.relative_to(directory).parts[0] == "fructosa":
                continue  # lmaster's liveness paths, not the benchmark's
            fetched = whisper.fetch(str(wsp), int(time.time()) - RETENTION_S + 1)
            if fetched is not None:
                total += sum(value is not None for value in fetched[1])
    return total


def carbon_rates(carbon: CarbonCache, since: float, until: float) -> dict[str, float]:
    """carbon-cache's own per-interval counters, summed over [since, until] → per second."""
    result = {}
    for name in ("metricsReceived", "committedPoints"):
        for wsp in carbon.data_dir.glob(f"carbon/agents/*/{name}.wsp"):
            fetched = whisper.fetch(str(wsp), int(since) - 1, int(until) + 1)
            if fetched is None:
                continue
            (start, _, step), values = fetched
            times = range(start, start + step * len(values), step)
            points = [
                value
                for when, value in zip(times, values, strict=True)
                if value is not None and since + METRIC_INTERVAL <= when <= until
            ]
            if points:
                result[name] = sum(points) / (len(points) * METRIC_INTERVAL)
    return result


def run(workdir: Path, quick: bool) -> dict:
    window, warmup = (6.0, 3.0) if quick else (30.0, 8.0)
    workdir.mkdir(parents=True, exist_ok=True)
    carbon = CarbonCache(
        workdir / "carbon", retentions=f"1s:{RETENTION_S // 3600}h",
        settings={"CARBON_METRIC_INTERVAL": METRIC_INTERVAL},
    )  # fmt: skip
    carbon.start()
    try:
        pin(carbon.pid, LOAD_CPU)
        master, port = start_lmaster(workdir / "lmaster", carbon.pickle_port, carbon.line_port)
        senders: Senders | None = None
        try:
            t0 = float(int(time.time()) - RETENTION_S + 100)
            per_process = CONNECTIONS // 2
            specs = [
                SenderSpec("fructosa", port, index * per_process, per_process, timestamp=t0,
                           distinct_timestamps=True, max_sequence=RETENTION_S - 300)
                for index in range(2)
            ]  # fmt: skip
            senders = Senders(specs)
            senders.wait_ready()
            print(f"  e2e: lmaster → carbon-cache, {window:g} s …", flush=True)
            started = time.time()
            senders.start()
            time.sleep(warmup)
            acked0 = senders.acked
            foreign = ForeignWindow().start()
            master_cpu, carbon_cpu = CpuWindow(master.pid).start(), CpuWindow(carbon.pid).start()
            senders_cpu = [CpuWindow(pid).start() for pid in senders.pids]
            window_start = time.time()
            time.sleep(window)
            master_cpu.stop()
            carbon_cpu.stop()
            senders_percent = sum(w.stop() for w in senders_cpu)
            foreign.stop()
            window_end = time.time()
            acked1 = senders.acked
            master_rss, carbon_rss = rss_bytes(master.pid), rss_bytes(carbon.pid)
            senders.finish()
            sent = senders.sent
            print(f"  e2e: waiting for {sent:,} datapoints to land in whisper …", flush=True)
            landed, last_change = 0, time.monotonic()
            deadline = time.monotonic() + (60 if quick else 180)
            while time.monotonic() < deadline:
                time.sleep(3)
                count = whisper_points(carbon.data_dir)
                if count != landed:
                    landed, last_change = count, time.monotonic()
                if landed >= sent or time.monotonic() - last_change > 15:
                    break
            all_landed = time.time()
            time.sleep(METRIC_INTERVAL + 2)  # carbon's counters of the window are written
            rates = carbon_rates(carbon, window_start, window_end)
        finally:
            if senders is not None:
                senders.terminate()
            master.stop()
    finally:
        carbon.stop()
    row = {
        "connections": CONNECTIONS,
        "lmaster_to_carbon_per_s": (acked1 - acked0) / master_cpu.seconds,
        "carbon_received_per_s": rates.get("metricsReceived"),
        "whisper_committed_per_s": rates.get("committedPoints"),
        "lmaster_cpu_percent": master_cpu.percent,
        "carbon_cpu_percent": carbon_cpu.percent,
        "senders_cpu_percent": senders_percent,
        "lmaster_rss_mb": master_rss / 1e6,
        "carbon_rss_mb": carbon_rss / 1e6,
        "sent": sent,
        "landed": landed,
        "lost": sent - landed,
        "landed_per_s_overall": landed / (all_landed - started) if landed else 0.0,
        "drain_s": all_landed - window_end,
        "window_s": master_cpu.seconds,
        "foreign_percent": foreign.percent,
    }
    return {"rows": [row]}
