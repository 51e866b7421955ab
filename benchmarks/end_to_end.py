"""Benchmark 4: end to end into real carbon-caches, one and then two, side by side.

Simulated agents (8 connections, agent protocol, window of 32) → lmaster →
carbon-cache (``tests.support.carbon.CarbonCache``: whisper 1 s points for
2 h, no update/create limits). Each connection has its own 500 paths and
stamps batch N with ``T0 + N`` seconds (T0 two hours ago), so every datapoint
is a distinct whisper point and the points in the files can be counted.

Two configurations in one run, so their ratio is measured on the same machine
in the same minutes:

* **one cache**: carbon-cache alone on core 1; lmaster and the senders on core 0.
* **two caches**: lmaster's ``[Graphite] destinations`` names two carbon-caches
  (``127.0.0.1:PORT:a, 127.0.0.1:PORT:b``), sharded like carbon's
  consistent-hashing relay; cache ``a`` is pinned to core 0, cache ``b`` to
  core 1, and lmaster and the senders may run on either (they take the
  cycles the caches leave).

Reported for each: what lmaster handed to carbon (acknowledged datapoints/s:
a batch is acknowledged once written to carbon's socket), what the caches
received and committed to whisper per second (their own instrumentation,
every 5 s, summed), every process's CPU % and RSS, and after the senders
stop, the time until every datapoint is in whisper and how many are (counted
in the files), with each cache's share of them.

The ratio that counts is of what was *stored* per second over the whole run:
every point in whisper after the drain, divided by the time from the first
batch sent until the last point landed. carbon-cache's own counters over the
window do not give it: its cache absorbs what the writer has not committed
yet, so within 30 s a cache may receive less than it commits (draining what
the warm-up left) or more (building a backlog). The window's ratios of
received, committed and handed-over rates are printed beside it. Where the
bottleneck sits shows in which process runs at 100 % of its core.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import whisper

from tests.support.carbon import CarbonCache, free_ports

from .measure import LOAD_CPU, RELAY_CPU, VENV_BIN, CpuWindow, ForeignWindow, Proc, can_connect, pin, rss_bytes
from .senders import Senders, SenderSpec
from .servers import lmaster_config

CONNECTIONS = 8
TARGET_RATIO = 1.6
"""The target: two caches store at least this many times what one stores."""
BOTH_CORES = RELAY_CPU | LOAD_CPU
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


@dataclass(frozen=True)
class Layout:
    """Which cores each process of one configuration runs on."""

    label: str
    caches: tuple[set[int], ...]
    lmaster: set[int]
    senders: set[int]


LAYOUTS = (
    Layout("one cache", (LOAD_CPU,), RELAY_CPU, RELAY_CPU),
    Layout("two caches", (RELAY_CPU, LOAD_CPU), BOTH_CORES, BOTH_CORES),
)


def start_lmaster_for(workdir: Path, caches: list[CarbonCache], cpus: set[int]) -> tuple[Proc, int]:
    """lmaster with the benchmark settings, its ``[Graphite]`` naming one cache
    (host and pickle port) or several (``destinations``, instances a, b, …)."""
    (port,) = free_ports(1)
    config = lmaster_config(workdir, port, caches[0].pickle_port, caches[0].line_port)
    if len(caches) > 1:
        destinations = ", ".join(f"127.0.0.1:{cache.pickle_port}:{instance_name(index)}"
                                 for index, cache in enumerate(caches))  # fmt: skip
        text = config.read_text()
        pickle_line = f"carbon receiver pickle port = {caches[0].pickle_port}\n"
        assert pickle_line in text
        config.write_text(text.replace(pickle_line, f"destinations = {destinations}\n"))
    argv = [str(VENV_BIN / "lmaster"), "-c", str(config), "-p", str(workdir / "lmaster.pid"), "start", "--foreground"]
    proc = Proc("lmaster", argv, workdir / "lmaster.out", cpus)
    proc.wait_ready(lambda: can_connect(port))
    return proc, port


def instance_name(index: int) -> str:
    return "abcdefgh"[index]


def wait_until_landed(caches: list[CarbonCache], sent: int, quick: bool) -> list[int]:
    """Points in each cache's whisper files once they stop growing (or all ``sent`` are there)."""
    landed, last_change = [0] * len(caches), time.monotonic()
    deadline = time.monotonic() + (60 if quick else 180)
    while time.monotonic() < deadline:
        time.sleep(3)
        counts = [whisper_points(cache.data_dir) for cache in caches]
        if counts != landed:
            landed, last_change = counts, time.monotonic()
        if sum(landed) >= sent or time.monotonic() - last_change > 15:
            break
    return landed


def measure(workdir: Path, layout: Layout, quick: bool) -> dict:
    """One configuration: start its caches and lmaster, drive them, count what landed."""
    window, warmup = (6.0, 3.0) if quick else (30.0, 8.0)
    workdir.mkdir(parents=True, exist_ok=True)
    caches: list[CarbonCache] = []
    master: Proc | None = None
    senders: Senders | None = None
    try:
        for index, cpus in enumerate(layout.caches):
            cache = CarbonCache(
                workdir / f"carbon-{instance_name(index)}", retentions=f"1s:{RETENTION_S // 3600}h",
                settings={"CARBON_METRIC_INTERVAL": METRIC_INTERVAL},
            )  # fmt: skip
            caches.append(cache.start())
            pin(cache.pid, cpus)
        master, port = start_lmaster_for(workdir / "lmaster", caches, layout.lmaster)
        t0 = float(int(time.time()) - RETENTION_S + 100)
        per_process = CONNECTIONS // 2
        specs = [
            SenderSpec("fructosa", port, index * per_process, per_process, timestamp=t0,
                       distinct_timestamps=True, max_sequence=RETENTION_S - 300)
            for index in range(2)
        ]  # fmt: skip
        senders = Senders(specs, layout.senders)
        senders.wait_ready()
        print(f"  e2e, {layout.label}: lmaster → {len(caches)} carbon-cache(s), {window:g} s …", flush=True)
        started = time.time()
        senders.start()
        time.sleep(warmup)
        acked0 = senders.acked
        foreign = ForeignWindow().start()
        master_cpu = CpuWindow(master.pid).start()
        caches_cpu = [CpuWindow(cache.pid).start() for cache in caches]
        senders_cpu = [CpuWindow(pid).start() for pid in senders.pids]
        window_start = time.time()
        time.sleep(window)
        master_cpu.stop()
        for cpu in caches_cpu:
            cpu.stop()
        senders_percent = sum(w.stop() for w in senders_cpu)
        foreign.stop()
        window_end = time.time()
        acked1 = senders.acked
        master_rss, caches_rss = rss_bytes(master.pid), [rss_bytes(cache.pid) for cache in caches]
        senders.finish()
        sent = senders.sent
        print(f"  e2e, {layout.label}: waiting for {sent:,} datapoints to land in whisper …", flush=True)
        landed = wait_until_landed(caches, sent, quick)
        all_landed = time.time()
        time.sleep(METRIC_INTERVAL + 2)  # carbon's counters of the window are written
        rates = [carbon_rates(cache, window_start, window_end) for cache in caches]
    finally:
        if senders is not None:
            senders.terminate()
        if master is not None:
            master.stop()
        for cache in caches:
            cache.stop()
    total_landed = sum(landed)

    def summed(name: str) -> float | None:
        values = [rate.get(name) for rate in rates]
        return None if None in values else sum(values)  # type: ignore[arg-type]

    return {
        "configuration": layout.label,
        "caches": len(caches),
        "cores": {
            "carbon-cache": [sorted(cpus) for cpus in layout.caches],
            "lmaster": sorted(layout.lmaster),
            "senders": sorted(layout.senders),
        },  # fmt: skip
        "connections": CONNECTIONS,
        "lmaster_to_carbon_per_s": (acked1 - acked0) / master_cpu.seconds,
        "carbon_received_per_s": summed("metricsReceived"),
        "whisper_committed_per_s": summed("committedPoints"),
        "lmaster_cpu_percent": master_cpu.percent,
        "carbon_cpu_percent": [cpu.percent for cpu in caches_cpu],
        "senders_cpu_percent": senders_percent,
        "lmaster_rss_mb": master_rss / 1e6,
        "carbon_rss_mb": [rss / 1e6 for rss in caches_rss],
        "sent": sent,
        "landed": total_landed,
        "landed_per_cache": landed,
        "share_percent": [100.0 * count / total_landed if total_landed else 0.0 for count in landed],
        "lost": sent - total_landed,
        "landed_per_s_overall": total_landed / (all_landed - started) if total_landed else 0.0,
        "drain_s": all_landed - window_end,
        "window_s": master_cpu.seconds,
        "foreign_percent": foreign.percent,
    }


def run(workdir: Path, quick: bool) -> dict:
    rows = [measure(workdir / layout.label.replace(" ", "-"), layout, quick) for layout in LAYOUTS]

    def ratio(key: str) -> float | None:
        one, two = (row[key] for row in rows)
        return two / one if one and two is not None else None

    ratios = {
        "stored_whole_run": ratio("landed_per_s_overall"),
        "received_in_window": ratio("carbon_received_per_s"),
        "committed_in_window": ratio("whisper_committed_per_s"),
        "handed_in_window": ratio("lmaster_to_carbon_per_s"),
    }
    stored = [row["landed_per_s_overall"] for row in rows]
    lost = sum(row["lost"] for row in rows)
    target = {
        "target": f"two carbon-caches store ≥ {TARGET_RATIO:g}× one, nothing lost",
        "measured": f"{ratios['stored_whole_run'] or 0:.2f}× ({stored[1]:,.0f} / {stored[0]:,.0f} dp/s stored), "
        f"lost {lost:,}",
        "pass": (ratios["stored_whole_run"] or 0) >= TARGET_RATIO and lost == 0,
    }
    return {"rows": rows, "ratio": ratios["stored_whole_run"], "ratios": ratios, "targets": [target]}
