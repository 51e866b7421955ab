"""``/metrics`` for a large cluster: 5,000 hosts × 300 series from a LatestValues store fed with real blocks.

    .venv/bin/python benchmarks/metrics_exposition.py [--hosts 5000] [--series 300] [--gzip]

Prints the time to copy the store on the event loop (the only part that
blocks it), to render the body in a worker thread, and the body's size.
"""

from __future__ import annotations

import argparse
import time

from fructosa.prometheus.exposition import MetricsExposition
from fructosa.taps.latest import LatestValues
from fructosa.wire.blocks import Block


def realistic_names(count: int) -> list[str]:
    """A node's relative paths: per-CPU utilisation and times, memory, disks, interfaces, mounts."""
    names = [f"CPUPercent.{cpu}" for cpu in range(64)] + ["CPUPercent.total"]
    names += [f"VirtualMemory.{field}" for field in ("total", "available", "percent", "used", "free", "cached")]
    names += [f"CPUTimes.cpu{cpu}.{mode}" for cpu in range(16) for mode in ("user", "system", "idle", "iowait")]
    names += [f"DiskIOCounters.sd{disk}.{field}" for disk in "abcd" for field in ("read_bytes", "write_bytes")]
    names += [f"NetIOCounters.eth{nic}.{field}" for nic in range(4) for field in ("bytes_sent", "bytes_recv")]
    names += [f"DiskUsage.mount{mount}.{field}" for mount in range(20) for field in ("free", "used", "percent")]
    names += [f"GPU.gpu{gpu}.utilization.gpu" for gpu in range(8)]
    names += [f"SensorsTemperatures.coretemp.Core_{core}.current" for core in range(200)]
    return names[:count]


def filled_store(hosts: int, series: int, now: float) -> LatestValues:
    store = LatestValues(main_series=())
    names = realistic_names(series)
    for index in range(hosts):
        host = f"node{index:05d}"
        store.observe(
            Block.of([(f"{host}.{name}", (now, 0.5 + position)) for position, name in enumerate(names)]), host
        )
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--series", type=int, default=300)
    parser.add_argument("--gzip", action="store_true")
    args = parser.parse_args()
    now = time.time()
    store = filled_store(args.hosts, args.series, now)
    exposition = MetricsExposition(store)
    for attempt in range(2):  # the second run has the per-name cache warm, as every scrape after the first
        if attempt:  # as when every host sent a block since the last scrape: each holds one, unstored
            for host in list(store.hosts()):
                store.observe(Block.of([(f"{host}.{name}", (now + 1, 1.5)) for name in realistic_names(args.series)]),
                              host)  # fmt: skip
        settled, slices, longest = time.perf_counter(), 0, 0.0
        for _ in store.store_held_in_slices():  # what the handler does first, awaiting between slices
            slices, longest = slices + 1, max(longest, time.perf_counter() - settled)
            settled = time.perf_counter()
        started = time.perf_counter()
        longest = max(longest, started - settled)
        snapshot = exposition.snapshot(now)
        copied = time.perf_counter()
        size = sum(len(chunk) for chunk in exposition.render(snapshot, gzip=args.gzip))
        done = time.perf_counter()
        print(
            f"run {attempt + 1}: {args.hosts} hosts × {args.series} series: held blocks stored in {slices + 1} "
            f"slices (longest {1000 * longest:.0f} ms), snapshot {1000 * (copied - started):.0f} ms "
            f"(event loop), render {done - copied:.2f} s (worker thread), {size / 1e6:.1f} MB"
            f"{' gzip' if args.gzip else ''}"
        )


if __name__ == "__main__":
    main()
