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
