"""Fault tests of the delivery guarantee: real agents, real lmaster, real
carbon-cache; every value an agent journaled must be in whisper afterwards.

The outages last as long as the issue asks (lmaster killed for 30 s, carbon
stopped for 60 s): the durations are the condition under test, not waits for
readiness.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.support.carbon import CarbonCache, free_ports
from tests.support.daemons import Daemon
from tests.support.journal import count_points, missing_points

SENSORS = "[sensor:VirtualMemory]\ntime_interval = 1\n\n[sensor:CPUTimes]\ntime_interval = 1\n"


class Cluster:
    """One lmaster and a few lagents in ``workdir``, each with its spool and journal."""

    def __init__(self, workdir: Path, carbon_port: int, agents: int = 3, agent_extra: str = "") -> None:
        self.workdir = workdir
        (self.port,) = free_ports(1)
        self.master_conf = workdir / "lmaster.conf"
        self.master_conf.write_text(
            f"[lmaster]\nhost = 127.0.0.1\nincoming data port = {self.port}\nspool dir = {workdir / 'spool-m'}\n"
            f"[Graphite]\nhost = 127.0.0.1\ncarbon receiver pickle port = {carbon_port}\n"
            f"[logging]\nfilename = {workdir / 'lmaster.log'}\nlevel = DEBUG\n"
        )
        self.agent_confs = []
        for index in range(agents):
            name = f"node{index:02d}"
            conf = workdir / f"{name}.conf"
            conf.write_text(
                f"[lmaster]\nhost = 127.0.0.1\nincoming data port = {self.port}\n"
                f"[lagent]\nhostname = {name}\nspool dir = {workdir / ('spool-' + name)}\n"
                f"journal file = {workdir / (name + '.journal')}\n{agent_extra}\n"
                f"[logging]\nfilename = {workdir / (name + '.log')}\n\n{SENSORS}"
            )
            self.agent_confs.append(conf)
        self.journals = [workdir / f"node{index:02d}.journal" for index in range(agents)]

    def master(self) -> Daemon:
        return Daemon("lmaster", self.master_conf, self.workdir / "m").start(listen_port=self.port)

    def agent(self, index: int) -> Daemon:
        return Daemon("lagent", self.agent_confs[index], self.workdir / f"a{index}").start()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()


def wait_until_stored(cluster: Cluster, carbon: CarbonCache, timeout: float = 60.0) -> dict[str, list[int]]:
    """Poll whisper until every journaled point is there (or time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        missing = missing_points(cluster.journals, carbon)
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.5)


@contextmanager
def running(*daemons: Daemon) -> Iterator[None]:
    with ExitStack() as stack:
        for daemon in daemons:
            stack.enter_context(daemon)
        yield


def report(name: str, produced: int, missing: dict[str, list[int]]) -> None:
    lost = sum(len(seconds) for seconds in missing.values())
    print(f"\n{name}: {produced} values measured, {produced - lost} stored, {lost} lost")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for sub in ("m", "a0", "a1", "a2"):
        (tmp_path / sub).mkdir()
    return tmp_path


def test_master_killed_for_30_s_loses_nothing(workdir: Path, carbon: CarbonCache) -> None:
    cluster = Cluster(workdir, carbon.pickle_port)
    agents = [cluster.agent(index) for index in range(3)]
    with running(*agents):
        master = cluster.master()
        carbon.wait_for("node02.VirtualMemory.percent")
        master.kill()
        time.sleep(30)
        with cluster.master():
            missing = wait_until_stored(cluster, carbon)
            for daemon in agents:  # clean stop: flush what is still unacknowledged
                daemon.stop()
            missing = wait_until_stored(cluster, carbon, timeout=30)
    produced = count_points(cluster.journals)
    report("lmaster kill -9 for 30 s", produced, missing)
    assert produced > 3 * 35 * 20  # three agents, ~35 s, ~20 values a second
    assert not missing, f"lost: { {path: seconds[:5] for path, seconds in missing.items()} }"
    assert "replaced stale pidfile" in (workdir / "lmaster.log").read_text()


def test_carbon_stopped_for_60_s_loses_nothing(workdir: Path) -> None:
    carbon = CarbonCache(workdir / "carbon")
    with carbon:
        cluster = Cluster(workdir, carbon.pickle_port, agents=2)
        agents = [cluster.agent(index) for index in range(2)]
        with running(cluster.master(), *agents):
            carbon.wait_for("node01.VirtualMemory.percent")
            carbon.stop()
            time.sleep(60)
            carbon.start()
            missing = wait_until_stored(cluster, carbon)
            for daemon in agents:
                daemon.stop()
            missing = wait_until_stored(cluster, carbon, timeout=30)
        produced = count_points(cluster.journals)
    report("carbon-cache stopped for 60 s", produced, missing)
    assert produced > 2 * 60 * 20
    assert not missing, f"lost: { {path: seconds[:5] for path, seconds in missing.items()} }"
    log = (workdir / "lmaster.log").read_text()
    assert "lost connection to carbon" in log and "spooled" in log


def test_agent_restarted_while_master_is_down_replays_its_spool(workdir: Path, carbon: CarbonCache) -> None:
    cluster = Cluster(workdir, carbon.pickle_port, agents=1)
    with cluster.agent(0):
        deadline = time.monotonic() + 20
        while count_points(cluster.journals) < 5 * 20 and time.monotonic() < deadline:
            time.sleep(0.2)  # about five seconds of measurements, spooled
    assert "batches spooled" in cluster.log("node00") or "spooled" in cluster.log("node00")
    spooled = list((workdir / "spool-node00").glob("*.seg"))
    assert spooled, "the stopped agent left nothing in its spool"
    with cluster.agent(0), cluster.master():
        missing = wait_until_stored(cluster, carbon)
    produced = count_points(cluster.journals)
    report("agent restarted while lmaster was down", produced, missing)
    assert not missing
    assert "batches waiting from earlier runs" in cluster.log("node00")


def spool_bytes(directory: Path) -> int:
    """Bytes in the spool's segments; one the agent drops while we look counts as gone."""
    total = 0
    for path in directory.glob("*.seg"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def test_full_agent_spool_drops_oldest_counted_and_bounded(workdir: Path, carbon: CarbonCache) -> None:
    """A 64 KiB spool and 20 sensors at 10 Hz: the spool wraps within seconds."""
    every_sensor = "".join(
        f"[sensor:{name}]\ntime_interval = 0.1\n\n"
        for name in ("CPUTimes", "CPUTimesPercent", "VirtualMemory", "SwapMemory", "CPUStats", "NetIOCounters")
    )
    cluster = Cluster(workdir, carbon.pickle_port, agents=1, agent_extra="spool max size = 64K")
    conf = cluster.agent_confs[0]
    conf.write_text(conf.read_text().replace(SENSORS, every_sensor))
    with cluster.agent(0) as agent:
        deadline = time.monotonic() + 30
        while "dropped the oldest" not in cluster.log("node00") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "dropped the oldest" in cluster.log("node00")
        for _ in range(20):  # keeps within its bounds while it keeps wrapping
            size = spool_bytes(workdir / "spool-node00")
            assert size <= 64 * 1024
            rss_kib = int(
                next(line for line in open(f"/proc/{agent.pid}/status") if line.startswith("VmRSS")).split()[1]
            )
            assert rss_kib < 80 * 1024
            time.sleep(0.1)
        with cluster.master():
            carbon.wait_for("node00.CPUStats.interrupts", timeout=20)
    stopped = cluster.log("node00")
    dropped = int(stopped.rsplit("samples dropped", 1)[0].rsplit(",", 1)[1].split()[0])
    assert dropped > 0
    assert os.path.exists(workdir / "spool-node00")
