"""TopProcesses: known processes (a CPU burner, a memory hog) at the top of
the lists, measured here, then through a real lagent → lmaster → carbon-cache
into whisper and out of graphite-web as the node dashboard's table asks.

The two processes name themselves (``prctl(PR_SET_NAME)``, what ``ps`` and
psutil show) so they are recognisable, and are killed by their PIDs.
"""

from __future__ import annotations

import getpass
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest

from fructosa.dashboards import node_dashboard
from fructosa.graphite_paths import sample_to_datapoints, sanitize_component, short_hostname
from fructosa.sensors.processes import TopProcesses, process_label
from tests.dashboards.helpers import model_targets
from tests.dashboards.pipeline import HOST, agent_config, master_config
from tests.support.carbon import CarbonCache, GraphiteWeb, free_ports
from tests.support.daemons import Daemon

BURNER, HOG = "fructosa-burn", "fructosa-hog"
HOG_BYTES = 200 * 2**20
NAME_ITSELF = "import ctypes; ctypes.CDLL(None).prctl(15, {name!r}.encode(), 0, 0, 0)\n"
PROGRAMS = {
    BURNER: NAME_ITSELF.format(name=BURNER) + "print('ready', flush=True)\nwhile True:\n    pass\n",
    HOG: NAME_ITSELF.format(name=HOG)
    + f"data = b'x' * {HOG_BYTES}\nprint('ready', flush=True)\nimport time\nwhile True:\n    time.sleep(60)\n",
}
USER = sanitize_component(getpass.getuser())


@pytest.fixture(scope="module")
def known() -> Iterator[dict[str, int]]:
    """The burner and the hog, running and named; their pids."""
    started: dict[str, subprocess.Popen] = {}
    try:
        for name, code in PROGRAMS.items():
            started[name] = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for name, process in started.items():
            assert process.stdout is not None and process.stdout.readline() == "ready\n", name
            assert psutil.Process(process.pid).name() == name
        yield {name: process.pid for name, process in started.items()}
    finally:
        for process in started.values():
            process.kill()  # by its pid: only what this test started
            process.wait(timeout=10)


WINDOW = 2.0
"""Seconds between the two samples a CPU % is measured over."""


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def ranked_by(ranks: dict) -> list[dict]:
    """The entries of one list in rank order, checking the ranks run 1, 2, 3… without a gap."""
    assert sorted(ranks) == sorted(f"rank_{rank}" for rank in range(1, len(ranks) + 1)), sorted(ranks)
    return [ranks[f"rank_{rank}"] for rank in range(1, len(ranks) + 1)]


def test_burner_and_hog_are_listed_with_their_real_figures_measured_here(known: dict[str, int]) -> None:
    """What the sensor must do, whatever else this machine runs: list the burner and the hog
    under their pids with their real CPU % and RSS, everything ranked above them at least as
    high. ``count`` exceeds the processes here, so the lists hold every measurable process."""
    sensor = TopProcesses({"count": len(psutil.pids()) + 100})
    burner, hog = known[BURNER], known[HOG]
    first = sensor.measure()
    assert first["cpu"] == {}  # the first sample has no window yet: no CPU list, no CPU values
    assert all("cpu_percent" not in rank or rank["cpu_percent"] is None for rank in first["memory"].values())
    used_before, started = cpu_seconds(burner), time.monotonic()
    deadline = started + WINDOW
    while time.monotonic() < deadline:  # the window the CPU % is measured over, not a synchronisation
        time.sleep(deadline - time.monotonic())
    value = sensor.measure()
    used_share = 100.0 * (cpu_seconds(burner) - used_before) / (time.monotonic() - started)
    cpu, memory = ranked_by(value["cpu"]), ranked_by(value["memory"])

    [(burner_rank, burner_entry)] = [(rank, entry) for rank, entry in enumerate(cpu) if entry["pid"] == burner]
    assert burner_entry["who"] == {USER: {BURNER: burner_entry["cpu_percent"]}}
    # the same process measured by psutil over (nearly) the same window
    assert burner_entry["cpu_percent"] == pytest.approx(used_share, abs=15), used_share
    assert burner_entry["cpu_percent"] > 0
    assert all(entry["cpu_percent"] >= burner_entry["cpu_percent"] for entry in cpu[:burner_rank])

    [(hog_rank, hog_entry)] = [(rank, entry) for rank, entry in enumerate(memory) if entry["pid"] == hog]
    assert hog_entry["who"] == {USER: {HOG: hog_entry["rss"]}}
    assert hog_entry["rss"] >= HOG_BYTES
    assert hog_entry["rss"] == pytest.approx(psutil.Process(hog).memory_info().rss, abs=2**20)  # it only sleeps
    assert hog_entry["memory_percent"] == pytest.approx(
        100 * hog_entry["rss"] / psutil.virtual_memory().total, abs=0.01
    )
    assert all(entry["rss"] >= hog_entry["rss"] for entry in memory[:hog_rank])
    assert all(entry["rss"] <= hog_entry["rss"] for entry in memory[hog_rank + 1 :])

    assert all(entry["job_id"] is None for entry in (burner_entry, hog_entry))  # not in a Slurm job
    assert value["processes"] >= len(memory) >= 6
    paths = [
        path for path, _ in sample_to_datapoints({"host": "n1", "sensor": "TopProcesses", "time": 1, "value": value})
    ]
    assert f"n1.TopProcesses.cpu.rank_{burner_rank + 1}.who.{USER}.{BURNER}" in paths
    assert f"n1.TopProcesses.memory.rank_{hog_rank + 1}.who.{USER}.{HOG}" in paths


def test_a_process_started_between_samples_is_measured_since_its_start() -> None:
    sensor = TopProcesses({"count": len(psutil.pids()) + 100})
    sensor.measure()  # the reference: the late process does not exist yet
    time.sleep(1.0)  # a stretch of the window before the late process starts, not a synchronisation
    code = NAME_ITSELF.format(name="fructosa-late") + "print('ready', flush=True)\nwhile True:\n    pass\n"
    late = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert late.stdout is not None and late.stdout.readline() == "ready\n"
        time.sleep(0.5)  # the rest of the window, not a synchronisation
        ranks = sensor.measure()["cpu"].values()
        process = psutil.Process(late.pid)
        since_start = 100.0 * cpu_seconds(late.pid) / (time.time() - process.create_time())
        [top] = [rank for rank in ranks if rank["pid"] == late.pid]
        # its CPU time over its own life (about a third of the window), whatever share this machine gave it
        assert top["cpu_percent"] > 0
        assert top["cpu_percent"] == pytest.approx(since_start, rel=0.3), since_start
    finally:
        late.kill()
        late.wait(timeout=10)


def test_kernel_thread_names_lose_their_instance_suffix() -> None:
    assert process_label("kworker/u256:2-events_unbound") == "kworker"
    assert process_label("ksoftirqd/7") == "ksoftirqd"
    assert process_label("python3.11") == "python3.11"
    assert process_label("") == process_label(None) == "unknown"
    assert len(process_label("x" * 100)) == 32


def wait_until(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


SHOWN = 10
"""Ranks the end-to-end agent sends: room for whatever big processes this machine runs beside the hog."""


def lifetime_cpu_share(pid: int) -> float:
    """CPU % of one core a process used on average since it started."""
    process = psutil.Process(pid)
    return 100.0 * cpu_seconds(pid) / max(time.time() - process.create_time(), 0.01)


def rank_in_whisper(carbon: CarbonCache, prefix: str, name: str, enough: Callable[[list], bool]) -> tuple[int, list]:
    """(rank, series) of ``name``'s identity series below ``prefix`` (``rank_R.who.USER.NAME``),
    at whatever rank this machine's other processes leave it, once ``enough(series)`` holds."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.rank_([0-9]+)\.who\.{re.escape(USER)}\.{re.escape(name)}$")
    deadline = time.monotonic() + 20
    while True:
        found = sorted((int(match[1]), match[0]) for match in map(pattern.match, carbon.metric_paths()) if match)
        for rank, path in found:
            series = carbon.series(path)
            if enough(series):
                return rank, series
        if time.monotonic() > deadline:
            raise AssertionError(f"no {name} below {prefix} in whisper: {found}")
        time.sleep(0.2)


@pytest.mark.skipif(not GraphiteWeb.is_available(), reason="graphite-web not installed (pip install graphite-web)")
def test_top_processes_reach_whisper_and_the_dashboard_table(tmp_path: Path, known: dict[str, int]) -> None:
    with ExitStack() as stack:
        carbon = stack.enter_context(CarbonCache(tmp_path / "carbon"))
        graphite = stack.enter_context(GraphiteWeb(carbon))
        (port,) = free_ports(1)
        master = Daemon("lmaster", master_config(tmp_path / "lmaster", port, carbon), tmp_path / "lmaster")
        stack.enter_context(master.start(listen_port=port))
        sensors = {"TopProcesses": {"count": str(SHOWN)}, "GPU": {}}
        agent_dir = tmp_path / "lagent"
        stack.enter_context(Daemon("lagent", agent_config(agent_dir, port, sensors), agent_dir).start())

        host = short_hostname(HOST)
        burner_rank, burner = rank_in_whisper(carbon, f"{host}.TopProcesses.cpu", BURNER, lambda p: len(p) >= 2)
        hog_rank, hog = rank_in_whisper(carbon, f"{host}.TopProcesses.memory", HOG, bool)
        # the burner spins: at least as busy in its best sample as on average over its life so far
        assert max(value for _, value in burner) >= lifetime_cpu_share(known[BURNER]) - 15
        assert hog[-1][1] >= HOG_BYTES
        pids = dict(carbon.wait_for(f"{host}.TopProcesses.memory.rank_{hog_rank}.pid", timeout=10))
        assert any(pids.get(when) == known[HOG] for when, _ in hog), (hog, pids)

        tables = {title: target.target for title, target in model_targets(node_dashboard(host))}

        def rows(title: str) -> dict[str, float]:
            return {
                series["target"]: [value for value, _ in series["datapoints"] if value is not None][-1]
                for series in graphite.render(tables[title], from_="-2min")
                if any(value is not None for value, _ in series["datapoints"])
            }

        wait_until(lambda: f"#{burner_rank} {BURNER} ({USER})" in rows("Top processes by CPU"), 10, "the CPU table")
        assert rows("Top processes by CPU")[f"#{burner_rank} {BURNER} ({USER})"] > 0
        assert rows("Top processes by memory")[f"#{hog_rank} {HOG} ({USER})"] >= HOG_BYTES
        ids = rows("Pids and Slurm jobs of the top processes")
        # the hog's pid among those of the memory list (its rank may have changed since: other processes grow)
        assert known[HOG] in {pid for name, pid in ids.items() if name.startswith("memory #")}, ids
        assert {name for name in ids if name.startswith("cpu #")} >= {"cpu #1 pid", "cpu #2 pid", "cpu #3 pid"}

        assert not any(".GPU." in path for path in carbon.metric_paths())
    log = (agent_dir / "lagent.log").read_text()
    assert log.count("sensor GPU is not supported on this host") == 1, log
