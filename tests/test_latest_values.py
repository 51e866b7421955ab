"""LatestValues: newest value per series, bounds, history, memory and speed (fed real Blocks)."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fructosa.taps.latest import LatestLimits, LatestValues
from fructosa.wire.blocks import Block

HOSTS = ["n1", "n2", "gpu-3"]
RELATIVE = ["CPUPercent.0", "CPUPercent.total", "VirtualMemory.percent", "DiskUsage.free", "SlurmJobs.job_7.rss"]

datapoint = st.tuples(
    st.sampled_from(HOSTS),
    st.sampled_from(RELATIVE),
    st.floats(0, 2e9, allow_nan=False),
    st.floats(-1e12, 1e12, allow_nan=False),
)
blocks = st.lists(st.tuples(st.sampled_from(HOSTS), st.lists(datapoint, min_size=1, max_size=12)), max_size=25)


@settings(max_examples=150, deadline=None)
@given(blocks, st.booleans())
def test_latest_is_the_newest_observed(batches, same_host_only):
    store = LatestValues()
    expected: dict[str, dict[str, tuple[float, float]]] = {}
    for hint, points in batches:
        if same_host_only:  # an agent's block: every path below its own host (the fast path)
            points = [(hint, relative, when, value) for _, relative, when, value in points]
        store.observe(Block.of([(f"{host}.{rel}", (when, value)) for host, rel, when, value in points]), hint)
        for host, relative, when, value in points:
            series = expected.setdefault(host, {})
            path = f"{host}.{relative}"
            if path not in series or when >= series[path][0]:
                series[path] = (when, value)
    assert store.hosts() == sorted(expected)
    for host, series in expected.items():
        assert store.latest(host) == series


def _block(host: str, names: list[str], when: float, value: float = 1.0) -> Block:
    return Block.of([(f"{host}.{name}", (when, value + index)) for index, name in enumerate(names)])


def test_host_and_series_caps_count_drops():
    store = LatestValues(LatestLimits(max_hosts=2, max_series_per_host=3))
    store.observe(_block("a", ["S.1", "S.2", "S.3", "S.4", "S.5"], 10.0), "a")
    assert len(store.latest("a")) == 3
    assert store.dropped_series == 2 and store.dropped("a") == 2
    store.observe(_block("a", ["S.1", "S.2", "S.3", "S.4", "S.5"], 11.0), "a")  # the cached layout counts again
    assert store.dropped_series == 4
    store.observe(_block("b", ["S.1"], 10.0), "b")
    store.observe(_block("c", ["S.1", "S.2"], 10.0), "c")
    assert store.hosts() == ["a", "b"] and store.dropped_hosts == 2
    assert store.forget("a") and not store.forget("a")
    store.observe(_block("c", ["S.1"], 12.0), "c")
    assert store.hosts() == ["b", "c"]


def test_forget_and_prune_release_interned_names():
    store = LatestValues(LatestLimits(series_ttl=100.0))
    store.observe(_block("a", ["SlurmJobs.job_1.rss", "VirtualMemory.percent"], 1000.0), "a")
    store.observe(_block("b", ["SlurmJobs.job_2.rss", "VirtualMemory.percent"], 1000.0), "b")
    store.observe(_block("a", ["VirtualMemory.percent"], 1200.0), "a")
    assert store.stats()["names"] == 3
    assert store.prune(now=1250.0) == 3  # job_1 on a, both series of b
    assert store.hosts() == ["a"] and store.stats()["names"] == 1
    assert store.latest("a") == {"a.VirtualMemory.percent": (1200.0, 1.0)}
    assert store.history("a", "SlurmJobs.**") == {}
    store.observe(_block("a", ["SlurmJobs.job_3.rss", "VirtualMemory.percent"], 1300.0), "a")  # a recycled id
    assert store.latest("a") == {"a.SlurmJobs.job_3.rss": (1300.0, 1.0), "a.VirtualMemory.percent": (1300.0, 2.0)}
    store.forget("a")
    assert store.stats()["names"] == 0 and store.latest("a") is None


def test_history_keeps_main_series_in_window_and_cap():
    store = LatestValues(LatestLimits(history_seconds=50.0, history_points=4, max_history_series=2))
    for second in range(0, 100, 10):
        store.observe(_block("a", ["CPUPercent.total", "DiskUsage.free", "CPUPercent.0", "CPUPercent.1"], second), "a")
    history = store.history("a")
    assert set(history) == {"a.CPUPercent.total", "a.CPUPercent.0"}  # not a main series / over the cap
    times, values = history["a.CPUPercent.total"]
    assert times == [60.0, 70.0, 80.0, 90.0] and values == [1.0] * 4
    store.observe(_block("a", ["CPUPercent.total"], 85.0, 9.0), "a")  # late point: not in history
    assert store.history("a", "CPUPercent.total")["a.CPUPercent.total"][0][-1] == 90.0
    wide = LatestValues(LatestLimits(history_seconds=25.0, history_points=100))
    for second in range(0, 100, 10):
        wide.observe(_block("a", ["VirtualMemory.percent"], second), "a")
    assert wide.history("a")["a.VirtualMemory.percent"][0] == [70.0, 80.0, 90.0]
    assert store.history("nobody") is None


def test_cpu_percent_total_or_mean_of_cpus():
    store = LatestValues()
    store.observe(Block.of([("a.CPUPercent.0", (1.0, 10.0)), ("a.CPUPercent.1", (1.0, 30.0))]), "a")
    assert store.cpu_percent("a") == 20.0
    store.observe(Block.of([("a.CPUPercent.2", (2.0, 50.0))]), "a")
    assert store.cpu_percent("a") == 30.0
    store.observe(Block.of([("a.CPUPercent.total", (3.0, 77.0))]), "a")
    assert store.cpu_percent("a") == 77.0
    assert store.cpu_percent("b") is None and store.get("a", "VirtualMemory.percent") is None


def _host_names(count: int) -> list[str]:
    cpus = [f"CPUPercent.{cpu}" for cpu in range(32)]
    others = [f"Sensor{sensor}.field{field}" for sensor in range(24) for field in range(11)]
    return (cpus + ["VirtualMemory.percent", "CPUPercent.total"] + others)[:count]


def test_memory_per_series_is_small():
    hosts, names = 1000, _host_names(300)
    agent_blocks = [_block(f"node{index:05d}", names, 1000.0) for index in range(hosts)]
    tracemalloc.start()
    try:
        store = LatestValues(main_series=())
        for index, block in enumerate(agent_blocks):
            store.observe(block, f"node{index:05d}")
            store.observe(block, f"node{index:05d}")
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_series = used / (hosts * len(names))
    assert store.stats()["series"] == hosts * len(names)
    assert per_series < 60, f"{per_series:.1f} bytes per series"  # about 27 measured: 5,000 × 300 in ~41 MB


def test_observe_is_cheap():
    store = LatestValues()
    names = _host_names(300) + [f"Extra.x{index}" for index in range(200)]
    block = _block("node1", names, 1000.0)
    store.observe(block, "node1")
    rounds = 300
    started = time.perf_counter()
    for _ in range(rounds):
        store.observe(block, "node1")
    micros = (time.perf_counter() - started) / rounds * 1e6
    assert micros < 1500, f"{micros:.0f} µs per 500-datapoint block"  # about 80 µs measured on an idle machine


def test_history_patterns():
    store = LatestValues()
    names = ["SlurmJobs.job_1.rss", "SlurmJobs.job_1.cpu_percent", "SlurmJobs.count", "CPUPercent.total"]
    store.observe(_block("a", names, 5.0), "a")
    assert set(store.history("a", "SlurmJobs.*.rss")) == {"a.SlurmJobs.job_1.rss"}
    assert set(store.history("a", "SlurmJobs.**")) == {f"a.{name}" for name in names[:3]}
    assert set(store.history("a", "**")) == {f"a.{name}" for name in names}
    started = time.perf_counter()
    with pytest.raises(ValueError, match="at most one"):
        store.history("a", "**.**.**.**.**.**.**.**.**.**.**.**.x")
    assert store.history("a", ".".join(["*"] * 60)) == {}  # many single-component wildcards stay linear
    assert time.perf_counter() - started < 1.0


def test_malformed_blocks_are_ignored_not_raised():
    store = LatestValues()
    store.observe(
        Block(b"a.X.y\na.X.z", Block.of([("a.X.y", (1.0, 1.0))]).times, Block.of([("a.X.y", (1.0, 1.0))]).values), "a"
    )
    store.observe(
        Block(b"b.X\nc.X", Block.of([("b.X", (1.0, 1.0))]).times, Block.of([("b.X", (1.0, 1.0))]).values), "z"
    )
    assert store.malformed_blocks == 2 and store.hosts() == []
    store.observe(_block("a", ["X.y"], 2.0), "a")
    assert store.latest("a") == {"a.X.y": (2.0, 1.0)}
