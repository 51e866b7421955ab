"""lagent's ticks: sensors due together are measured in one go, the cheap ones on
the event loop's own thread, the ones that may block on a worker thread, where a
hung one holds up nobody for long (the watchdog moves the others on)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Iterator

import psutil
import pytest

from fructosa.adaptive import AdaptivePlan
from fructosa.agent.lanes import Lane
from fructosa.agent.scheduler import ScheduledSensor, SensorScheduler
from fructosa.config import SensorConfig
from fructosa.sensors import REGISTRY, Sensor, register
from fructosa.sensors.disk import file_system_type

TIMEOUT = 20.0


class Measurements:
    """Where and when each test sensor measured: (sensor, thread id, monotonic time)."""

    seen: list[tuple[str, int, float]] = []


class OnLoopTestSensor(Sensor):
    description = "test only"
    blocking = False

    def measure(self) -> float:
        Measurements.seen.append((self.name, threading.get_ident(), time.monotonic()))
        return 1.0


class AlsoOnLoopTestSensor(OnLoopTestSensor):
    description = "test only"


class OnThreadTestSensor(OnLoopTestSensor):
    description = "test only"
    blocking = True


class HangingTestSensor(Sensor):
    """Blocks its thread until the test releases it, like statvfs on a dead NFS mount."""

    description = "test only"
    release = threading.Event()

    def measure(self) -> float:
        Measurements.seen.append((self.name, threading.get_ident(), time.monotonic()))
        HangingTestSensor.release.wait(TIMEOUT)
        return 1.0


@pytest.fixture
def test_sensors() -> Iterator[None]:
    classes = (OnLoopTestSensor, AlsoOnLoopTestSensor, OnThreadTestSensor, HangingTestSensor)
    for cls in classes:
        register(cls)
    Measurements.seen = []
    HangingTestSensor.release.clear()
    yield
    HangingTestSensor.release.set()
    for cls in classes:
        del REGISTRY[cls.__name__]


async def run_until(scheduler: SensorScheduler, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():
        assert time.monotonic() < deadline, f"not done within {TIMEOUT} s: {Measurements.seen}"
        await asyncio.sleep(0.02)
    await scheduler.stop()
    scheduler.shutdown()


def of(name: str) -> list[tuple[str, int, float]]:
    return [seen for seen in Measurements.seen if seen[0] == name]


@pytest.mark.usefixtures("test_sensors")
def test_sensors_due_together_are_measured_together_cheap_ones_on_the_loop_thread() -> None:
    recorded: list[str] = []

    async def scenario() -> int:
        scheduler = SensorScheduler(AdaptivePlan(), lambda name, value: recorded.append(name))
        scheduler.apply(
            [
                SensorConfig("OnLoopTestSensor", 0.1, {}),
                SensorConfig("AlsoOnLoopTestSensor", 0.2, {}),
                SensorConfig("OnThreadTestSensor", 0.2, {}),
            ]
        )
        await run_until(scheduler, lambda: len(of("AlsoOnLoopTestSensor")) >= 4 and len(of("OnThreadTestSensor")) >= 4)
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert {thread for _, thread, _ in of("OnLoopTestSensor") + of("AlsoOnLoopTestSensor")} == {loop_thread}
    assert loop_thread not in {thread for _, thread, _ in of("OnThreadTestSensor")}
    # Every 0.2-s tick of one is a tick of the other: measured within the same wakeup.
    fast = [when for _, _, when in of("OnLoopTestSensor")]
    for _, _, when in of("AlsoOnLoopTestSensor"):
        assert min(abs(when - other) for other in fast) < 0.005
    assert recorded.count("OnThreadTestSensor") >= 4


@pytest.mark.usefixtures("test_sensors")
def test_the_samples_measured_on_the_loop_at_one_tick_are_handed_over_in_one_call_in_order() -> None:
    """``record_all`` gets each tick's on-loop samples together; the lane's come one by one to ``record``;
    a ``record_all`` that raises is logged and the ticks go on."""
    handed: list[list[str]] = []
    one_by_one: list[str] = []

    def record_all(samples: list[tuple[str, object]]) -> None:
        handed.append([name for name, _ in samples])
        if len(handed) == 2:
            raise RuntimeError("the second tick's samples are refused")

    async def scenario() -> None:
        scheduler = SensorScheduler(AdaptivePlan(), lambda name, value: one_by_one.append(name), None, record_all)
        scheduler.apply(
            [
                SensorConfig("OnLoopTestSensor", 0.2, {}),
                SensorConfig("OnThreadTestSensor", 0.2, {}),
                SensorConfig("AlsoOnLoopTestSensor", 0.2, {}),
            ]
        )
        await run_until(scheduler, lambda: len(handed) >= 5 and len(one_by_one) >= 4)

    asyncio.run(scenario())
    # The first two may hold one each (started a moment apart, on a loaded machine); then both, in order.
    assert all(names == ["OnLoopTestSensor", "AlsoOnLoopTestSensor"] for names in handed[2:]), handed
    assert {name for names in handed[:2] for name in names} == {"OnLoopTestSensor", "AlsoOnLoopTestSensor"}
    assert set(one_by_one) == {"OnThreadTestSensor"}


@pytest.mark.usefixtures("test_sensors")
def test_a_hung_sensor_stalls_nobody() -> None:
    async def scenario() -> None:
        scheduler = SensorScheduler(AdaptivePlan(), lambda name, value: None)
        scheduler.apply([SensorConfig("HangingTestSensor", 0.2, {}), SensorConfig("OnThreadTestSensor", 0.2, {})])
        await run_until(scheduler, lambda: len(of("OnThreadTestSensor")) >= 5)

    asyncio.run(scenario())
    assert len(of("HangingTestSensor")) == 1  # still hung: never started again


@pytest.mark.usefixtures("test_sensors")
def test_the_watchdog_leaves_a_slow_sensor_its_thread_and_hands_back_the_rest_of_its_lane() -> None:
    hanging, other = (
        ScheduledSensor(SensorConfig("HangingTestSensor", 1, {})),
        ScheduledSensor(SensorConfig("OnThreadTestSensor", 1, {})),
    )
    hanging.sensor, other.sensor = HangingTestSensor(), OnThreadTestSensor()
    lane = Lane([hanging, other])
    thread = threading.Thread(target=lane.run)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not of("HangingTestSensor"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    slow, waiting = lane.take_over()
    assert slow is hanging and waiting == [other]
    HangingTestSensor.release.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert [(entry.name, value, error) for entry, value, error in lane.take_results()] == [
        ("HangingTestSensor", 1.0, None)
    ]
    assert not of("OnThreadTestSensor")  # not measured by the lane it left


Partition = namedtuple("Partition", "device mountpoint fstype opts")


def test_disk_usage_measures_on_the_loop_only_paths_on_local_file_systems(monkeypatch: pytest.MonkeyPatch) -> None:
    partitions = [
        Partition("/dev/vda1", "/", "ext4", "rw"),
        Partition("server:/home", "/home", "nfs4", "rw"),
        Partition("tmpfs", "/home/tmp", "tmpfs", "rw"),
    ]
    assert file_system_type("/var/log", partitions) == "ext4"
    assert file_system_type("/home/alice", partitions) == "nfs4"
    assert file_system_type("/home/tmp/x", partitions) == "tmpfs"
    assert file_system_type("/homeless", partitions) == "ext4"
    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: partitions)
    for paths, blocks in ((("/",), False), (("/", "/home/tmp"), False), (("/", "/home"), True)):
        sensor = REGISTRY["DiskUsage"]({"path": paths})
        sensor.start()
        assert sensor.may_block() is blocks, paths


def test_cheap_sensors_say_so_and_the_others_stay_off_the_loop() -> None:
    on_loop = {name for name, cls in REGISTRY.items() if not cls.blocking}
    assert {"CPUPercent", "CPUTimesPercent", "VirtualMemory", "NetIOCounters", "DiskIOCounters"} <= on_loop
    assert not on_loop & {"DiskUsage", "SlurmJobs", "Prometheus", "GPU", "TopProcesses", "NetConnections"}
