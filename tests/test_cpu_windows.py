"""CPU figures measured next to a real CPU burner that starts and stops.

The agent runs each measurement on whichever worker thread of its pool is
free. psutil's own non-blocking ``cpu_percent()`` keeps its reference per
thread, so figures used to average over random windows. These tests measure
the rate sensors the same way (several sensors, a shared pool, any worker)
and compare each sample with the truth over exactly that sensor's window,
read from ``/proc/stat`` beside it; then a real lagent writes its journal.

The machine is shared: the truth includes whatever else runs, so the tests
compare against it (and against the burner's own CPU time) rather than
expecting fixed figures.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from fructosa.selfstats import ProcessUsage
from fructosa.sensors import REGISTRY, Sensor
from tests.support.carbon import free_ports
from tests.support.daemons import Daemon
from tests.support.journal import complete_lines

CPUS = psutil.cpu_count() or 1
IGNORED_FIELDS = ("guest", "guest_nice")
"""Already counted in user and nice: the modes without them add up to 100."""
BURN = "while True:\n    pass\n"


def busy_share(before: psutil._common.scputimes, after: psutil._common.scputimes) -> float:
    """The whole machine's utilisation in percent between two ``psutil.cpu_times()`` readings."""
    deltas = {field: max(0.0, getattr(after, field) - getattr(before, field)) for field in after._fields}
    total = sum(value for field, value in deltas.items() if field not in IGNORED_FIELDS)
    return 100.0 * (total - deltas["idle"] - deltas.get("iowait", 0.0)) / total


def modes_sum(fields: dict) -> float:
    """The modes of one sample added up (per-CPU entries, nested or ``cpuN.mode`` keys, left out)."""
    return sum(
        value
        for field, value in fields.items()
        if field not in IGNORED_FIELDS and not isinstance(value, dict) and "." not in field
    )


@contextmanager
def burner() -> Iterator[subprocess.Popen]:
    """One process spinning on one CPU; killed by its pid."""
    process = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


# -- several sensors sharing a thread pool ------------------------------------


@dataclass
class Measured:
    """One ``measure()`` of a sensor on a pool worker, with the machine's CPU times read just before it."""

    round: int
    thread: int
    times: psutil._common.scputimes
    value: object


def measure_on_worker(round_number: int, sensor: Sensor) -> Measured:
    times = psutil.cpu_times()
    return Measured(round_number, threading.get_ident(), times, sensor.measure())


def test_rate_sensors_sharing_a_pool_rate_over_their_own_windows_around_a_burner() -> None:
    sensors = {
        "CPUPercent": REGISTRY["CPUPercent"]({"total": True}),
        "CPUTimesPercent": REGISTRY["CPUTimesPercent"]({"percpu": True}),
        "TopProcesses": REGISTRY["TopProcesses"]({"count": 3}),
        "VirtualMemory": REGISTRY["VirtualMemory"](),
        "NetIOCounters": REGISTRY["NetIOCounters"](),
        "CPUStats": REGISTRY["CPUStats"](),
    }
    for sensor in sensors.values():
        sensor.start()
    rounds: dict[str, list[Measured]] = defaultdict(list)
    phases: dict[str, list[int]] = defaultdict(list)  # phase → round numbers whose window lies wholly in it
    burner_share: dict[int, float] = {}
    shuffler = random.Random(7)
    interval, deadline = 0.5, time.monotonic() + 60

    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="sensor") as pool:

        def run_rounds(count: int, phase: str, burner_pid: int | None = None) -> None:
            for _ in range(count):
                assert time.monotonic() < deadline, "the pool took too long to measure"
                number = len(rounds["CPUPercent"])
                before = cpu_seconds(burner_pid) if burner_pid else None
                started = time.monotonic()
                order = list(sensors.items())
                shuffler.shuffle(order)  # whichever worker is free takes whichever sensor comes
                futures = {name: pool.submit(measure_on_worker, number, sensor) for name, sensor in order}
                for name, future in futures.items():
                    rounds[name].append(future.result(timeout=30))
                phases[phase].append(number)
                pause = started + interval - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # the sampling interval itself, not a synchronisation
                if burner_pid:
                    burner_share[number + 1] = (
                        100.0 * (cpu_seconds(burner_pid) - before) / ((time.monotonic() - started) * CPUS)
                    )

        run_rounds(3, "idle before")
        with burner() as burning:
            run_rounds(1, "burner starting")
            run_rounds(8, "burn", burning.pid)
        run_rounds(1, "burner stopping")
        run_rounds(6, "after")

    cpu_percent, modes = rounds["CPUPercent"], rounds["CPUTimesPercent"]
    # the first reading only takes the reference; every later one is a sample
    assert cpu_percent[0].value is None and modes[0].value is None
    assert all(sample.value is not None for sample in cpu_percent[1:] + modes[1:])
    assert rounds["VirtualMemory"][0].value is not None  # not a rate: sent at once
    # the scenario the agent creates: one sensor measured on several threads
    assert len({sample.thread for sample in cpu_percent}) >= 2

    errors = []
    for samples, busy in ((cpu_percent, lambda v: v["total"]), (modes, lambda v: 100.0 - v["idle"] - v["iowait"])):
        for previous, sample in zip(samples, samples[1:], strict=False):
            truth = busy_share(previous.times, sample.times)  # over this sensor's own window
            errors.append(busy(sample.value) - truth)
            assert busy(sample.value) == pytest.approx(truth, abs=5), (sample.round, sample.value, truth)
    print(f"pool: sensor - truth: min {min(errors):.2f} max {max(errors):.2f}")

    for sample in modes[1:]:
        assert modes_sum(sample.value) == pytest.approx(100, abs=1), sample.value
        for index in range(CPUS):
            assert modes_sum(sample.value[f"cpu{index}"]) == pytest.approx(100, abs=1), sample.value
    for sample in cpu_percent[1:]:
        assert 0 <= sample.value["total"] <= 100

    burning_totals = [cpu_percent[number].value["total"] for number in phases["burn"][1:]]
    for number, total in zip(phases["burn"][1:], burning_totals, strict=True):
        assert total >= burner_share[number] - 5, (total, burner_share[number])
    assert min(burner_share.values()) > 0  # the burner did burn in every window
    after = [cpu_percent[number].value["total"] for number in phases["after"]]
    truth_after = [busy_share(cpu_percent[n - 1].times, cpu_percent[n].times) for n in phases["after"]]
    truth_burn = [busy_share(cpu_percent[n - 1].times, cpu_percent[n].times) for n in phases["burn"][1:]]
    # the fall the machine saw is the fall the sensor reports
    fall = sum(burning_totals) / len(burning_totals) - sum(after) / len(after)
    assert fall == pytest.approx(sum(truth_burn) / len(truth_burn) - sum(truth_after) / len(truth_after), abs=3)


def test_a_reading_within_one_clock_tick_sends_nothing_and_keeps_the_window() -> None:
    sensor = REGISTRY["CPUTimesPercent"]()
    assert sensor.measure() is None
    deadline = time.monotonic() + 10
    while True:  # back to back readings until two fall within one tick of every CPU's clock
        value = sensor.measure()
        if value is None:
            break
        assert modes_sum(value) == pytest.approx(100, abs=1)
        assert time.monotonic() < deadline, "no two readings within one clock tick"
    time.sleep(0.3)  # the window the next sample covers (from the last usable reading on)
    assert modes_sum(sensor.measure()) == pytest.approx(100, abs=1)


def spin(seconds: float) -> None:
    """Keep this thread busy for ``seconds`` of wall time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def test_process_usage_rates_its_own_windows_whichever_thread_asks() -> None:
    usage = ProcessUsage()
    process = psutil.Process()
    spin(0.3)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(usage.sample).result(timeout=10)
        # the first figure covers the time since this process started: never a meaningless 0
        lifetime = 100.0 * sum(process.cpu_times()[:2]) / (time.time() - process.create_time())
        assert first["cpu_percent"] > 0
        assert first["cpu_percent"] == pytest.approx(lifetime, abs=10)
        used_before, started = sum(process.cpu_times()[:2]), time.monotonic()
        spin(0.6)
        busy = pool.submit(usage.sample).result(timeout=10)
        share = 100.0 * (sum(process.cpu_times()[:2]) - used_before) / (time.monotonic() - started)
        assert busy["cpu_percent"] == pytest.approx(share, abs=15), share
        time.sleep(0.6)  # the window of the next figure: this process idles
        calm = usage.sample()
        assert calm["cpu_percent"] < busy["cpu_percent"]
        assert calm["rss_bytes"] == pytest.approx(process.memory_info().rss, rel=0.2)


# -- a real lagent writing its journal ----------------------------------------

SENSORS_AT_ONE_SECOND = {
    "CPUPercent": "total = yes\n",
    "CPUTimesPercent": "percpu = yes\n",
    "TopProcesses": "count = 3\n",
    "VirtualMemory": "",
    "NetIOCounters": "",
    "DiskIOCounters": "",
}


@dataclass
class MachineClock:
    """The machine's CPU times and the burner's CPU seconds, read every ``step`` seconds by a thread."""

    readings: list[tuple[float, psutil._common.scputimes, float]]
    burner_pid: int | None = None

    def between(self, start: float, end: float) -> tuple[float, float]:
        """(machine busy %, burner % of the machine) between the readings nearest ``start`` and ``end``."""
        first = min(self.readings, key=lambda reading: abs(reading[0] - start))
        last = min(self.readings, key=lambda reading: abs(reading[0] - end))
        if last[0] <= first[0]:
            raise AssertionError(f"no readings between {start} and {end}")
        return busy_share(first[1], last[1]), 100.0 * (last[2] - first[2]) / ((last[0] - first[0]) * CPUS)


@contextmanager
def machine_clock(step: float = 0.05) -> Iterator[MachineClock]:
    clock = MachineClock([])
    stop = threading.Event()

    def burner_seconds() -> float:
        try:
            return cpu_seconds(clock.burner_pid) if clock.burner_pid else 0.0
        except psutil.NoSuchProcess:
            return clock.readings[-1][2] if clock.readings else 0.0

    def run() -> None:
        while not stop.is_set():
            clock.readings.append((time.time(), psutil.cpu_times(), burner_seconds()))
            stop.wait(step)

    thread = threading.Thread(target=run, name="machine-clock", daemon=True)
    thread.start()
    try:
        yield clock
    finally:
        stop.set()
        thread.join(timeout=10)


def journal_samples(path: Path, host: str) -> dict[str, dict[float, dict[str, float]]]:
    """Sensor → sample time → {rest of the path: value} from the agent's journal."""
    samples: dict[str, dict[float, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    if not path.exists():
        return samples
    for line in complete_lines(path):
        metric, value, when = line.split()
        prefix, sensor, rest = metric.split(".", 2)
        assert prefix == host, line
        samples[sensor][float(when)][rest] = float(value)
    return samples


def wait_for_samples(journal: Path, host: str, sensor: str, since: float, count: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        samples = journal_samples(journal, host)
        if sum(when >= since for when in samples[sensor]) >= count:
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} {sensor} samples since {since} in {journal}")
        time.sleep(0.2)


def test_lagent_journal_cpu_figures_around_a_burner(tmp_path: Path) -> None:
    (closed_port,) = free_ports(1)  # no lmaster: the journal records what was measured all the same
    host, journal = "cpuwindows", tmp_path / "lagent.journal"
    sections = "".join(
        f"[sensor:{name}]\ntime_interval = 1\n{options}\n" for name, options in SENSORS_AT_ONE_SECOND.items()
    )
    conf = tmp_path / "lagent.conf"
    conf.write_text(
        f"[lmaster]\nhost = 127.0.0.1\nincoming data port = {closed_port}\n\n"
        f"[lagent]\nhostname = {host}\nspool dir = {tmp_path / 'spool'}\njournal file = {journal}\n\n"
        f"[logging]\nfilename = {tmp_path / 'lagent.log'}\nlevel = INFO\n\n{sections}"
    )
    with machine_clock() as clock, Daemon("lagent", conf, tmp_path).start():
        wait_for_samples(journal, host, "CPUPercent", 0, 3, timeout=20)
        with burner() as burning:
            clock.burner_pid = burning.pid
            burn_start = time.time()
            wait_for_samples(journal, host, "CPUPercent", burn_start + 1, 5, timeout=20)
            burn_end = time.time()
        wait_for_samples(journal, host, "CPUPercent", burn_end + 1, 4, timeout=20)
        samples = wait_for_samples(journal, host, "CPUTimesPercent", burn_end + 1, 4, timeout=20)

    cpu_times = sorted(samples["CPUPercent"].items())
    # the first measure after the start only takes the reference: no sample within the first interval
    first_memory = min(samples["VirtualMemory"])
    assert cpu_times[0][0] >= first_memory + 0.5, (cpu_times[0][0], first_memory)
    assert min(samples["CPUTimesPercent"]) >= first_memory + 0.5
    first_top = min(samples["TopProcesses"])
    # at the first tick (its lane may finish it late on a loaded machine, never after the next tick): its memory
    # list is sent at once, its CPU list not yet
    assert first_top < sorted(samples["VirtualMemory"])[1]
    assert any(key.startswith("memory.") for key in samples["TopProcesses"][first_top])
    assert not any(key.startswith("cpu.") for key in samples["TopProcesses"][first_top])

    for when, fields in samples["CPUTimesPercent"].items():
        assert modes_sum(fields) == pytest.approx(100, abs=1), (when, fields)  # never a sum of 0
        for index in range(CPUS):
            per_cpu = {key.split(".", 1)[1]: value for key, value in fields.items() if key.startswith(f"cpu{index}.")}
            assert modes_sum(per_cpu) == pytest.approx(100, abs=1), (when, per_cpu)

    # each sample against the machine over the same window (the journal's time is the end of the window)
    windows = [(start, end, fields["total"], *clock.between(start, end))
               for (start, _), (end, fields) in zip(cpu_times, cpu_times[1:], strict=False)]  # fmt: skip
    print("journal: (window end after burn start, CPUPercent.total, machine, burner)")
    print(
        [
            (round(end - burn_start, 1), total, round(machine, 1), round(part, 1))
            for _, end, total, machine, part in windows
        ]
    )
    for _, end, total, machine, _ in windows:
        assert total == pytest.approx(machine, abs=8), (end - burn_start, total, machine)
    burning = [window for window in windows if burn_start + 0.5 < window[0] and window[1] < burn_end - 0.2]
    calm = [window for window in windows if window[0] > burn_end + 0.2]
    assert len(burning) >= 3 and len(calm) >= 3
    for _, _, total, _, burner_part in burning:  # the burner alone keeps the machine this busy
        assert total >= burner_part - 8, (total, burner_part)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    # the fall the machine saw when the burner stopped is the fall the sensor reports
    fall = mean([window[2] for window in burning]) - mean([window[2] for window in calm])
    machine_fall = mean([window[3] for window in burning]) - mean([window[3] for window in calm])
    assert fall == pytest.approx(machine_fall, abs=5), (burning, calm)
