"""Fault tests of the delivery guarantee: real agents, real lmaster, real
carbon-cache; every value an agent journaled must be in whisper afterwards.

The outages last 30 s (lmaster killed) and 60 s (carbon stopped): the
durations are the condition under test, not waits for readiness. Everything
else polls with a deadline.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.support.carbon import CarbonCache, free_ports
from tests.support.configs import Options, agent_ini, master_ini
from tests.support.daemons import Daemon
from tests.support.journal import count_points, missing_points
from tests.support.waiting import wait_for, wait_for_log

SENSORS: Mapping[str, Options] = {"VirtualMemory": {"time_interval": 1}, "CPUTimes": {"time_interval": 1}}


class Cluster:
    """One lmaster and a few lagents in ``workdir``, each with its spool and journal."""

    def __init__(
        self,
        workdir: Path,
        carbon_port: int,
        agents: int = 3,
        agent_options: Options | None = None,
        sensors: Mapping[str, Options] = SENSORS,
    ) -> None:
        self.workdir = workdir
        (self.port,) = free_ports(1)
        self.master_conf = workdir / "lmaster.conf"
        self.master_conf.write_text(master_ini(workdir, self.port, carbon_port, level="DEBUG"))
        self.agent_confs = []
        for index in range(agents):
            name = f"node{index:02d}"
            conf = workdir / f"{name}.conf"
            options = {"journal file": workdir / f"{name}.journal", **(agent_options or {})}
            conf.write_text(agent_ini(workdir, self.port, hostname=name, lagent=options, sensors=sensors))
            self.agent_confs.append(conf)
        self.journals = [workdir / f"node{index:02d}.journal" for index in range(agents)]

    def master(self) -> Daemon:
        return Daemon("lmaster", self.master_conf, self.workdir / "m").start(listen_port=self.port)

    def agent(self, index: int) -> Daemon:
        return Daemon("lagent", self.agent_confs[index], self.workdir / f"a{index}").start()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()


def missing_until(cluster: Cluster, carbon: CarbonCache, until: float | None = None) -> dict[str, list[int]]:
    """Journaled seconds (up to ``until``, when given) with no value in whisper, per metric."""
    missing = missing_points(cluster.journals, carbon)
    if until is not None:
        missing = {metric: [s for s in seconds if s <= until] for metric, seconds in missing.items()}
    return {metric: seconds for metric, seconds in missing.items() if seconds}


def wait_until_stored(cluster: Cluster, carbon: CarbonCache, timeout: float = 60.0, until: float | None = None) -> None:
    """Poll whisper until every point journaled (up to ``until``) is there.

    While agents run they journal new points all the time: ``until`` (the
    moment the outage ended) lets the wait end once the outage is replayed.
    """

    def lost() -> str:
        missing = missing_until(cluster, carbon, until)
        return f"lost: { {path: seconds[:5] for path, seconds in missing.items()} }"

    wait_for(
        lambda: not missing_until(cluster, carbon, until),
        timeout,
        "every journaled value in whisper",
        interval=0.5,
        describe=lost,
    )


@contextmanager
def running(*daemons: Daemon) -> Iterator[None]:
    with ExitStack() as stack:
        for daemon in daemons:
            stack.enter_context(daemon)
        yield


def report(name: str, produced: int) -> None:
    print(f"\n{name}: {produced} values measured, all stored")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for sub in ("m", "a0", "a1", "a2"):
        (tmp_path / sub).mkdir()
    return tmp_path


@pytest.mark.slow
def test_master_killed_for_30_s_loses_nothing(workdir: Path, carbon: CarbonCache) -> None:
    cluster = Cluster(workdir, carbon.pickle_port)
    agents = [cluster.agent(index) for index in range(3)]
    with running(*agents):
        master = cluster.master()
        carbon.wait_for("node02.VirtualMemory.percent")
        master.kill()
        time.sleep(30)  # the outage under test
        with cluster.master():
            wait_until_stored(cluster, carbon, until=time.time())
            for daemon in agents:  # clean stop: flush what is still unacknowledged
                daemon.stop()
            wait_until_stored(cluster, carbon, timeout=30)
    produced = count_points(cluster.journals)
    report("lmaster kill -9 for 30 s", produced)
    assert produced > 3 * 35 * 20  # three agents, ~35 s, ~20 values a second
    assert "replaced stale pidfile" in (workdir / "lmaster.log").read_text()


@pytest.mark.slow
def test_carbon_stopped_for_60_s_loses_nothing(workdir: Path) -> None:
    carbon = CarbonCache(workdir / "carbon")
    with carbon:
        cluster = Cluster(workdir, carbon.pickle_port, agents=2)
        agents = [cluster.agent(index) for index in range(2)]
        with running(cluster.master(), *agents):
            carbon.wait_for("node01.VirtualMemory.percent")
            carbon.stop()
            time.sleep(60)  # the outage under test
            carbon.start()
            wait_until_stored(cluster, carbon, until=time.time())
            for daemon in agents:
                daemon.stop()
            wait_until_stored(cluster, carbon, timeout=30)
        produced = count_points(cluster.journals)
    report("carbon-cache stopped for 60 s", produced)
    assert produced > 2 * 60 * 20
    log = (workdir / "lmaster.log").read_text()
    assert "lost connection to carbon" in log and "spooled" in log


def test_agent_restarted_while_master_is_down_replays_its_spool(workdir: Path, carbon: CarbonCache) -> None:
    cluster = Cluster(workdir, carbon.pickle_port, agents=1)
    with cluster.agent(0):  # about five seconds of measurements, spooled
        wait_for(lambda: count_points(cluster.journals) >= 5 * 20, 20, "five seconds of measurements")
    assert "batches spooled" in cluster.log("node00") or "spooled" in cluster.log("node00")
    spooled = list((workdir / "spool-node00").glob("*.seg"))
    assert spooled, "the stopped agent left nothing in its spool"
    with cluster.agent(0), cluster.master():
        wait_until_stored(cluster, carbon, until=time.time())
    produced = count_points(cluster.journals)
    report("agent restarted while lmaster was down", produced)
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
    every_sensor = {
        name: {"time_interval": 0.1}
        for name in ("CPUTimes", "CPUTimesPercent", "VirtualMemory", "SwapMemory", "CPUStats", "NetIOCounters")
    }
    cluster = Cluster(
        workdir, carbon.pickle_port, agents=1, agent_options={"spool max size": "64K"}, sensors=every_sensor
    )
    with cluster.agent(0) as agent:
        wait_for_log(workdir / "node00.log", "dropped the oldest", timeout=60)
        for _ in range(20):  # keeps within its bounds while it keeps wrapping
            size = spool_bytes(workdir / "spool-node00")
            assert size <= 64 * 1024
            rss_kib = int(
                next(line for line in open(f"/proc/{agent.pid}/status") if line.startswith("VmRSS")).split()[1]
            )
            assert rss_kib < 80 * 1024
            time.sleep(0.1)
        with cluster.master():
            carbon.wait_for("node00.CPUStats.interrupts", timeout=60)
        agent.stop(timeout=60)  # its own stop line, however slowly a loaded machine lets it write it
    log_text = cluster.log("node00")
    stopped = re.search(r"lagent stopped: .*, (\d+) samples dropped$", log_text, flags=re.MULTILINE)
    assert stopped is not None, "no stop line in node00.log: the agent did not stop by itself"
    # The spool's own count of what it dropped (its last "N dropped in total").
    spool_totals = re.findall(r"dropped the oldest \d+ records .*; (\d+) dropped in total", log_text)
    assert spool_totals and int(spool_totals[-1]) > 0, spool_totals
    assert os.path.exists(workdir / "spool-node00")
