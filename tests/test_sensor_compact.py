"""Sensor.measure_compact: psutil's namedtuple stands for exactly the sample measure() gives.

The agent records ``measure_compact()``; the golden tests check ``measure()``. With psutil's
answers held fixed, the plain form of the one is the other, for every option that changes the shape.
"""

from __future__ import annotations

import collections
from typing import Any

import psutil
import pytest

from fructosa.agent.layouts import plain
from fructosa.sensors import REGISTRY

Disk = collections.namedtuple("Disk", "read_count write_count read_bytes busy_time")
Nic = collections.namedtuple("Nic", "bytes_sent bytes_recv errin dropout")
Usage = collections.namedtuple("Usage", "total used free percent")

FIXED: dict[str, Any] = {
    "virtual_memory": psutil.virtual_memory(),
    "swap_memory": psutil.swap_memory(),
    "cpu_stats": psutil.cpu_stats(),
    "cpu_times": (psutil.cpu_times(), psutil.cpu_times(percpu=True)),
    "disk_io_counters": (Disk(1, 2, 3, 4), {"sda": Disk(1, 1, 1, 1), "sdb": Disk(0, 1, 2, 3)}),
    "net_io_counters": (Nic(5, 6, 0, 1), {"lo": Nic(1, 1, 0, 0), "eth0": Nic(4, 5, 0, 1)}),
}


@pytest.fixture
def fixed_psutil(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """psutil's calls of these sensors answering the same every time (per-item variants by their flag)."""
    answers = dict(FIXED)

    def pair(name: str, flag: str) -> Any:
        return lambda **options: answers[name][1] if options.get(flag) else answers[name][0]

    monkeypatch.setattr(psutil, "virtual_memory", lambda: answers["virtual_memory"])
    monkeypatch.setattr(psutil, "swap_memory", lambda: answers["swap_memory"])
    monkeypatch.setattr(psutil, "cpu_stats", lambda: answers["cpu_stats"])
    monkeypatch.setattr(psutil, "cpu_times", pair("cpu_times", "percpu"))
    monkeypatch.setattr(psutil, "disk_io_counters", pair("disk_io_counters", "perdisk"))
    monkeypatch.setattr(psutil, "net_io_counters", pair("net_io_counters", "pernic"))
    usage = {"/": Usage(10, 4, 6, 40.0), "/home": Usage(20, 5, 15, 25.0)}

    def disk_usage(path: str) -> Usage:
        if path not in usage:
            raise FileNotFoundError(2, "No such file or directory")
        return usage[path]

    monkeypatch.setattr(psutil, "disk_usage", disk_usage)
    return answers


CASES = [
    ("VirtualMemory", {}),
    ("SwapMemory", {}),
    ("CPUStats", {}),
    ("CPUTimes", {"percpu": False}),
    ("CPUTimes", {"percpu": True}),
    ("DiskIOCounters", {"perdisk": False}),
    ("DiskIOCounters", {"perdisk": True}),
    ("NetIOCounters", {"pernic": False}),
    ("NetIOCounters", {"pernic": True}),
    ("DiskUsage", {"path": ("/",)}),
    ("DiskUsage", {"path": ("/nowhere",)}),
    ("DiskUsage", {"path": ("/", "/home")}),
]


@pytest.mark.parametrize(("name", "settings"), CASES)
@pytest.mark.usefixtures("fixed_psutil")
def test_the_compact_sample_stands_for_the_measured_one(name: str, settings: dict) -> None:
    sensor = REGISTRY[name](settings)
    compact = sensor.measure_compact()
    assert plain(compact) == sensor.measure()
    assert type(plain(compact)) is dict


@pytest.mark.parametrize("name", ["DiskIOCounters", "NetIOCounters"])
def test_no_disk_or_interface_at_all_is_an_empty_sample_either_way(name: str, fixed_psutil: dict[str, Any]) -> None:
    call = "disk_io_counters" if name == "DiskIOCounters" else "net_io_counters"
    fixed_psutil[call] = (None, {})
    sensor = REGISTRY[name]({})
    assert sensor.measure_compact() == {} == sensor.measure()


def test_a_sensor_that_shapes_its_sample_records_measure_as_it_is() -> None:
    sensor = REGISTRY["CPUPercent"]({})
    assert sensor.measure_compact() is None  # its first reading only takes the reference, as measure() does
    assert not REGISTRY["CPUPercent"].one_tuple and not REGISTRY["Users"].one_tuple


@pytest.mark.parametrize(("name", "settings"), CASES)
@pytest.mark.usefixtures("fixed_psutil")
def test_the_agents_reader_gives_the_compact_sample(name: str, settings: dict) -> None:
    sensor = REGISTRY[name](settings)
    assert plain(sensor.compact_reader()()) == sensor.measure()


CPU_TIMES = type(psutil.cpu_times())


def cpu_reading(*seconds: float) -> list:
    """One per-CPU reading: each CPU's modes all at its figure (idle and iowait a quarter of it)."""
    fields = CPU_TIMES._fields
    return [
        CPU_TIMES(*(value / 4 if field in ("idle", "iowait") else value * (index + 1) for index, field in
                    enumerate(fields)))
        for value in seconds
    ]  # fmt: skip


READINGS = [
    cpu_reading(10.0, 20.0),
    cpu_reading(11.0, 23.5),
    cpu_reading(11.0, 23.5),  # no time elapsed: no sample, the window stays
    cpu_reading(12.5, 23.6),
    cpu_reading(12.0, 30.0),  # a counter went back on one CPU
    cpu_reading(13.0, 31.0, 5.0),  # a CPU came: no sample, a new reference
    cpu_reading(14.0, 33.0, 6.5),
]

WINDOW_CASES = [
    ("CPUPercent", {"percpu": True, "total": False}),
    ("CPUPercent", {"percpu": True, "total": True}),
    ("CPUPercent", {"percpu": False, "total": True}),
    ("CPUTimesPercent", {"percpu": False}),
    ("CPUTimesPercent", {"percpu": True}),
]


@pytest.mark.parametrize(("name", "settings"), WINDOW_CASES)
def test_a_cpu_windows_compact_sample_stands_for_the_measured_one(
    name: str, settings: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two instances fed the same readings: one measured, the other read as the agent reads it."""
    from fructosa.sensors import cpu_window

    monkeypatch.setattr(cpu_window, "SHARED_FOR", 0.0)  # every window step reads anew (the next scripted reading)
    monkeypatch.setattr(cpu_window, "_shared", (float("-inf"), [], []))
    script = iter(reading for reading in READINGS for _ in range(2))  # each reading once for each instance
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu=False: next(script))
    measured, compact = REGISTRY[name](settings), REGISTRY[name](settings)
    read = compact.compact_reader()
    samples = 0
    for _ in READINGS:
        expected = measured.measure()
        sample = read()
        assert (sample is None) == (expected is None)
        if sample is not None:
            samples += 1
            assert plain(sample) == expected
            assert type(plain(sample)) is dict
    assert samples == 3
