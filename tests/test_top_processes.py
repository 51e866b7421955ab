"""TopProcesses: known processes (a CPU burner, a memory hog) at the top of
the lists, measured here, then through a real lagent → lmaster → carbon-cache
into whisper and out of graphite-web as the node dashboard's table asks.

The two processes name themselves (``prctl(PR_SET_NAME)``, what ``ps`` and
psutil show) so they are recognisable, and are killed by their PIDs.
"""

from __future__ import annotations

import getpass
import subprocess
import sys
import time
from collections.abc import Iterator
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


def test_burner_and_hog_top_the_lists_measured_here(known: dict[str, int]) -> None:
    sensor = TopProcesses({"count": 3})
    sensor.start()
    time.sleep(1.0)  # CPU % is measured between two samples
    value = sensor.measure()
    cpu, memory = value["cpu"], value["memory"]
    assert cpu["rank_1"]["pid"] == known[BURNER]
    assert cpu["rank_1"]["who"] == {USER: {BURNER: cpu["rank_1"]["cpu_percent"]}}
    assert cpu["rank_1"]["cpu_percent"] > 50  # it spins on one CPU
    assert memory["rank_1"]["pid"] == known[HOG]
    assert memory["rank_1"]["rss"] >= HOG_BYTES
    assert memory["rank_1"]["memory_percent"] == pytest.approx(
        100 * memory["rank_1"]["rss"] / psutil.virtual_memory().total, abs=0.01
    )
    assert all(rank["job_id"] is None for rank in cpu.values())  # not in a Slurm job
    assert len(cpu) == len(memory) == 3 and value["processes"] >= 6
    paths = [
        path for path, _ in sample_to_datapoints({"host": "n1", "sensor": "TopProcesses", "time": 1, "value": value})
    ]
    assert f"n1.TopProcesses.cpu.rank_1.who.{USER}.{BURNER}" in paths


def test_a_process_started_between_samples_is_measured_since_its_start() -> None:
    sensor = TopProcesses({"count": 5})
    sensor.start()
    code = NAME_ITSELF.format(name="fructosa-late") + "print('ready', flush=True)\nwhile True:\n    pass\n"
    late = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert late.stdout is not None and late.stdout.readline() == "ready\n"
        time.sleep(0.5)
        ranks = sensor.measure()["cpu"].values()
        [top] = [rank for rank in ranks if rank["pid"] == late.pid]  # beside the burner, if it runs
        assert top["cpu_percent"] > 30
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


@pytest.mark.skipif(not GraphiteWeb.is_available(), reason="graphite-web not installed (pip install graphite-web)")
def test_top_processes_reach_whisper_and_the_dashboard_table(tmp_path: Path, known: dict[str, int]) -> None:
    with ExitStack() as stack:
        carbon = stack.enter_context(CarbonCache(tmp_path / "carbon"))
        graphite = stack.enter_context(GraphiteWeb(carbon))
        (port,) = free_ports(1)
        master = Daemon("lmaster", master_config(tmp_path / "lmaster", port, carbon), tmp_path / "lmaster")
        stack.enter_context(master.start(listen_port=port))
        sensors = {"TopProcesses": {"count": "3"}, "GPU": {}}
        agent_dir = tmp_path / "lagent"
        stack.enter_context(Daemon("lagent", agent_config(agent_dir, port, sensors), agent_dir).start())

        host = short_hostname(HOST)
        burner_path = f"{host}.TopProcesses.cpu.rank_1.who.{USER}.{BURNER}"
        hog_path = f"{host}.TopProcesses.memory.rank_1.who.{USER}.{HOG}"
        burner = carbon.wait_for(burner_path, lambda points: len(points) >= 2, timeout=20)
        hog = carbon.wait_for(hog_path, timeout=20)
        assert burner[-1][1] > 50 and hog[-1][1] >= HOG_BYTES
        pid = carbon.wait_for(f"{host}.TopProcesses.memory.rank_1.pid", timeout=10)
        assert pid[-1][1] == known[HOG]

        tables = {title: target.target for title, target in model_targets(node_dashboard(host))}

        def rows(title: str) -> dict[str, float]:
            return {
                series["target"]: [value for value, _ in series["datapoints"] if value is not None][-1]
                for series in graphite.render(tables[title], from_="-2min")
                if any(value is not None for value, _ in series["datapoints"])
            }

        wait_until(lambda: f"#1 {BURNER} ({USER})" in rows("Top processes by CPU"), 10, "the CPU table")
        assert rows("Top processes by CPU")[f"#1 {BURNER} ({USER})"] > 50
        assert rows("Top processes by memory")[f"#1 {HOG} ({USER})"] >= HOG_BYTES
        ids = rows("Pids and Slurm jobs of the top processes")
        assert ids["memory #1 pid"] == known[HOG]
        assert {name for name in ids if name.startswith("cpu #")} >= {"cpu #1 pid", "cpu #2 pid", "cpu #3 pid"}

        assert not any(".GPU." in path for path in carbon.metric_paths())
    log = (agent_dir / "lagent.log").read_text()
    assert log.count("sensor GPU is not supported on this host") == 1, log
