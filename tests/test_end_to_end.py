"""agent → master → real carbon-cache, with the seed-003 configuration files."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from fructosa.graphite_paths import short_hostname
from tests.support.carbon import CarbonCache, free_ports
from tests.support.daemons import Daemon, seed_configs
from tests.support.waiting import wait_for, wait_for_log

HOST = short_hostname(__import__("socket").gethostname())
REQUIRED = [
    f"{HOST}.CPUPercent.0",
    f"{HOST}.VirtualMemory.percent",
    f"{HOST}.DiskUsage.percent",
    f"{HOST}.CPUTimes.user",
    f"{HOST}.NetIOCounters.bytes_sent",
]


def test_seed_configs_deliver_every_sensor_to_whisper(tmp_path: Path, carbon: CarbonCache) -> None:
    (master_port,) = free_ports(1)
    master_conf, agent_conf = seed_configs(tmp_path, master_port, carbon.pickle_port)
    started = time.time()
    with Daemon("lmaster", master_conf, tmp_path).start(listen_port=master_port):
        with Daemon("lagent", agent_conf, tmp_path).start():
            series = {path: carbon.wait_for(path, timeout=20) for path in REQUIRED}
            for path, points in series.items():
                newest_time, _ = points[-1]
                assert newest_time >= int(started) - 1, f"{path} holds no recent value"
            percent = series[f"{HOST}.VirtualMemory.percent"][-1][1]
            assert abs(percent - psutil.virtual_memory().percent) < 15
            assert 0 <= series[f"{HOST}.DiskUsage.percent"][-1][1] <= 100
            # Every sensor the host supports reaches Graphite (no fans, battery or
            # temperature sensors on a VM: those say so once in the log).
            expected_sensors = {
                "CPUTimesPercent", "CPUCount", "CPUStats", "SwapMemory", "DiskPartitions",
                "DiskIOCounters", "NetConnections", "NetIFAddrs", "NetIFStats", "BootTime", "Users",
            }  # fmt: skip

            def seen() -> set[str]:
                return {path.split(".")[1] for path in carbon.metric_paths()}

            wait_for(
                lambda: expected_sensors <= seen(),
                20,
                "every sensor the host supports in whisper",
                describe=lambda: f"missing: {expected_sensors - seen()}",
            )
    log = (tmp_path / "limon.log").read_text()
    assert "[Graphite] is not used by lagent" in log
    assert "sensor CPUPercent started, every 10 s" in log
    assert "connected to carbon" in log


def test_agent_keeps_measuring_while_master_is_down(tmp_path: Path, carbon: CarbonCache) -> None:
    """Samples taken before lmaster exists are buffered and delivered later."""
    (master_port,) = free_ports(1)
    master_conf, agent_conf = seed_configs(tmp_path, master_port, carbon.pickle_port)
    log = tmp_path / "limon.log"
    agent_started = time.time()
    with Daemon("lagent", agent_conf, tmp_path).start():
        wait_for_log(log, "cannot reach lmaster")
        # The condition under test is "data older than lmaster": let the clock
        # move past the whisper second of the agent's first samples.
        wait_for(lambda: time.time() >= agent_started + 2, 5, "the clock past the agent's first second")
        master_started = int(time.time())
        with Daemon("lmaster", master_conf, tmp_path).start(listen_port=master_port):
            # VirtualMemory runs every 30 s: its first sample predates lmaster.
            points = carbon.wait_for(f"{HOST}.VirtualMemory.percent", timeout=30)
            assert points[0][0] < master_started
            wait_for_log(log, "connected to lmaster")


def test_master_holds_datapoints_while_carbon_is_down(tmp_path: Path) -> None:
    """lmaster queues while carbon is away and delivers once it listens."""
    carbon = CarbonCache(tmp_path / "carbon").reserve_ports()
    (master_port,) = free_ports(1)
    master_conf, agent_conf = seed_configs(tmp_path, master_port, carbon.pickle_port)
    log = tmp_path / "limon.log"
    with Daemon("lmaster", master_conf, tmp_path).start(listen_port=master_port):
        with Daemon("lagent", agent_conf, tmp_path).start():
            agent_started = time.time()
            wait_for_log(log, "unreachable")
            wait_for_log(log, "connected to lmaster")
            wait_for(lambda: time.time() >= agent_started + 2, 5, "the clock past the agent's first second")
            carbon_started = int(time.time())
            with carbon:
                points = carbon.wait_for(f"{HOST}.VirtualMemory.percent", timeout=40)
                assert points[0][0] < carbon_started
                wait_for_log(log, "connected to carbon")
