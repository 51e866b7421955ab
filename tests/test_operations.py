"""Operating the daemons: sensor listing, config check, reload, liveness,
self-metrics, status, the Graphite switch — against real processes and a real
carbon-cache."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from fructosa.config import effective_agent_ini, effective_master_ini, load_agent_config, load_master_config
from fructosa.graphite_paths import short_hostname
from fructosa.sensors import REGISTRY
from tests.support.carbon import CarbonCache, free_ports
from tests.support.configs import Options, agent_ini, master_ini
from tests.support.daemons import Daemon, script
from tests.support.journal import timestamps
from tests.support.waiting import wait_for, wait_for_log

CORPUS = Path(__file__).parent / "check_corpus"
HOST = short_hostname(__import__("socket").gethostname())


def run(program: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([script(program), *args], capture_output=True, text=True, timeout=60)


def test_sensors_lists_every_registered_sensor() -> None:
    result = run("lagent", "sensors")
    assert result.returncode == 0
    sensor_lines, generic_options = result.stdout.split("\n\n", 1)  # then the options every section takes
    listed = [line.split()[0] for line in sensor_lines.splitlines()]
    assert listed == sorted(REGISTRY)
    assert "fast time_interval" in generic_options
    for name, sensor_class in REGISTRY.items():
        assert sensor_class.description in result.stdout, name


def test_sensor_help_shows_options_sample_and_live_paths() -> None:
    result = run("lagent", "sensors", "NetIOCounters")
    assert result.returncode == 0
    out = result.stdout
    assert "pernic (yes/no, default no)" in out
    assert "[sensor:NetIOCounters]\ntime_interval = 10\npernic = no" in out
    assert f"  {HOST}.NetIOCounters.bytes_sent " in out
    unsupported = run("lagent", "sensors", "SensorsBattery")
    assert unsupported.returncode == 0 and "not supported" in unsupported.stdout
    unknown = run("lagent", "sensors", "NetIOCountrs")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "lagent: error: unknown sensor 'NetIOCountrs' (did you mean 'NetIOCounters'?)"


@pytest.mark.parametrize("conf", sorted(CORPUS.glob("*/*.conf")), ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_check_corpus(conf: Path) -> None:
    """One file per mistake; the expected exit status and stderr lines are golden."""
    program = conf.parent.name
    result = run(program, "-c", str(conf), "check")
    lines = [f"exit {result.returncode}"]
    for line in result.stderr.splitlines():
        if not line.startswith("# "):
            line = line.replace(str(conf), "CONFIG")
            if "cannot resolve: " in line:  # the resolver's own words vary by host
                line = line.split("cannot resolve: ")[0] + "cannot resolve: ..."
            lines.append(line)
    assert lines == conf.with_suffix(".expected").read_text().splitlines()
    if result.returncode == 0:
        assert "[lmaster]" in result.stdout and "[logging]" in result.stdout


def test_effective_configuration_loads_back_to_the_same(tmp_path: Path) -> None:
    seed = Path(__file__).parent / "data" / "seed-003"
    agent = load_agent_config(str(seed / "lagent.conf"))
    again = tmp_path / "agent.conf"
    again.write_text(effective_agent_ini(agent))
    reloaded = load_agent_config(str(again))
    assert reloaded.sensors == agent.sensors
    assert (reloaded.master_host, reloaded.master_port, reloaded.logging) == (
        agent.master_host, agent.master_port, agent.logging,
    )  # fmt: skip
    master = load_master_config(str(seed / "lmaster.conf"))
    again.write_text(effective_master_ini(master))
    reloaded_master = load_master_config(str(again))
    assert (reloaded_master.graphite, reloaded_master.logging) == (master.graphite, master.logging)


class Site:
    """Configs for one master and one agent in ``tmp_path``, with short intervals."""

    def __init__(
        self,
        tmp_path: Path,
        carbon: CarbonCache,
        graphite: Options | None = None,
        agent_options: Options | None = None,
        agent_logging: Options | None = None,
    ) -> None:
        self.tmp = tmp_path
        (self.port,) = free_ports(1)
        self.master_conf = tmp_path / "lmaster.conf"
        self.master_conf.write_text(
            master_ini(
                tmp_path,
                self.port,
                carbon.pickle_port,
                lmaster={"self metrics interval": 1},
                graphite={"carbon receiver plaintext port": carbon.line_port, **(graphite or {})},
            )
        )
        self.agent_conf = tmp_path / "lagent.conf"
        self.agent_options = {"heartbeat interval": 1, "self metrics interval": 1, **(agent_options or {})}
        self.agent_logging = agent_logging or {"filename": tmp_path / "lagent.log"}

    def agent_sensors(self, sensors: Mapping[str, Options]) -> None:
        self.agent_conf.write_text(
            agent_ini(
                self.tmp,
                self.port,
                hostname="node07",
                lagent=self.agent_options,
                sensors=sensors,
                sections={"logging": self.agent_logging},
            )
        )

    def master(self) -> Daemon:
        return Daemon("lmaster", self.master_conf, self.tmp).start(listen_port=self.port)

    def agent(self) -> Daemon:
        return Daemon("lagent", self.agent_conf, self.tmp).start()

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()


def test_reload_adds_removes_and_retimes_sensors_without_gaps(tmp_path: Path, carbon: CarbonCache) -> None:
    journal = tmp_path / "lagent.journal"
    site = Site(tmp_path, carbon, agent_options={"journal file": journal})
    site.agent_sensors(
        {"VirtualMemory": {"time_interval": 1}, "SwapMemory": {"time_interval": 1}, "CPUStats": {"time_interval": 5}}
    )
    with site.master(), site.agent() as agent:
        carbon.wait_for("node07.SwapMemory.total")
        site.agent_sensors(
            {"VirtualMemory": {"time_interval": 1}, "CPUStats": {"time_interval": 1}, "BootTime": {"time_interval": 1}}
        )
        reload_sent = time.time()
        reloaded = run("lagent", "-c", str(site.agent_conf), "-p", str(agent.pidfile), "reload")
        assert reloaded.returncode == 0, reloaded.stderr
        wait_for_log(tmp_path / "lagent.log", "configuration reloaded")
        reloaded_at = int(time.time())
        carbon.wait_for("node07.BootTime", timeout=10)
        # re-timed from 5 s to 1 s: several points in the next seconds
        carbon.wait_for("node07.CPUStats.interrupts", lambda pts: len([p for p in pts if p[0] > reloaded_at]) >= 3)
        swap_last = carbon.series("node07.SwapMemory.total")[-1][0]
        memory = carbon.wait_for("node07.VirtualMemory.percent", lambda pts: pts[-1][0] >= reloaded_at + 3)
        # a bad configuration is refused and the old one keeps running
        site.agent_sensors({"VirtualMemory": {"time_interval": "never"}})
        os.kill(agent.pid, signal.SIGHUP)
        wait_for_log(tmp_path / "lagent.log", "reload rejected, the running configuration stays")
        assert agent.running
    assert swap_last <= reloaded_at + 1, "the removed sensor kept sending"
    # No gap across either reload: one VirtualMemory sample per second of the agent's own clock (a sample a
    # loaded machine made late is no gap, one skipped is), and each of them stored.
    stamps = timestamps(journal, "node07.VirtualMemory.percent")
    assert stamps[0] < reload_sent and stamps[-1] >= memory[-1][0], (stamps, reload_sent)
    assert len(stamps) == round(stamps[-1] - stamps[0]) + 1, f"VirtualMemory has a gap across the reload: {stamps}"
    assert {int(stamp) for stamp in stamps if stamp < memory[-1][0]} <= {when for when, _ in memory}
    assert "sensor SwapMemory removed" in site.log("lagent")


def test_killed_agent_is_marked_down_and_status_shows_it(tmp_path: Path, carbon: CarbonCache) -> None:
    site = Site(tmp_path, carbon)
    site.agent_sensors({"VirtualMemory": {"time_interval": 1}})
    with site.master() as master:
        agent = site.agent()
        carbon.wait_for("node07.fructosa.up", lambda pts: pts[-1][1] == 1.0)
        status = run("lmaster", "-p", str(master.pidfile), "status")
        assert status.returncode == 0
        assert "node07" in status.stdout and "1 agents (1 up)" in status.stdout
        agent.kill()
        killed_at = time.time()
        down = carbon.wait_for(
            "node07.fructosa.up", lambda pts: bool(pts) and pts[-1][1] == 0.0, since=int(killed_at), timeout=30
        )
        assert down[-1][0] >= int(killed_at)
        # Down because its connection went with it, not because lmaster's idle timeout ran out at last
        # (how soon lmaster writes that is up to a loaded machine: no bound on it here).
        master_log = site.log("lmaster")
        assert re.search(r"agent node07 \(.*\) (disconnected|connection lost)", master_log), master_log
        since = carbon.wait_for("node07.fructosa.seconds_since_data", lambda pts: pts[-1][1] >= 2)
        assert since[-1][1] >= 2
        status = run("lmaster", "-p", str(master.pidfile), "status")
        assert "node07" in status.stdout and "NO" in status.stdout


def test_self_metrics_of_both_daemons_land_in_carbon(tmp_path: Path, carbon: CarbonCache) -> None:
    site = Site(tmp_path, carbon)
    site.agent_sensors({"CPUPercent": {"time_interval": 0.5}})
    with site.master(), site.agent():
        agent_rss = carbon.wait_for("node07.fructosa.agent.rss_bytes")[-1][1]
        assert 5e6 < agent_rss < 500e6
        carbon.wait_for("node07.fructosa.agent.interval.CPUPercent", lambda pts: pts[-1][1] == 0.5)
        carbon.wait_for("node07.fructosa.agent.samples_per_second", lambda pts: bool(pts) and pts[-1][1] >= 1)
        prefix = f"fructosa.lmaster.{HOST}"
        carbon.wait_for(f"{prefix}.agents_connected", lambda pts: pts[-1][1] == 1)
        carbon.wait_for(f"{prefix}.rss_bytes")
        carbon.wait_for(f"{prefix}.graphite.sent", lambda pts: pts[-1][1] > 0)


def test_switches_graphite_off_self_metrics_off_and_no_log_file(tmp_path: Path, carbon: CarbonCache) -> None:
    site = Site(
        tmp_path,
        carbon,
        graphite={"enabled": "no"},
        agent_options={"self metrics": "no"},
        agent_logging={"log file": "None"},
    )
    site.agent_sensors({"VirtualMemory": {"time_interval": 0.5}})
    with site.master() as master, site.agent() as agent:
        wait_for_log(tmp_path / "lmaster.log", "no sink enabled")

        def master_status_with_agent_up() -> subprocess.CompletedProcess | None:
            status = run("lmaster", "-p", str(master.pidfile), "status")
            return status if "1 up" in status.stdout else None

        status = wait_for(master_status_with_agent_up, 10, "lmaster status saying its agent is up", interval=0.2)
        assert "1 agents (1 up)" in status.stdout
        # the agent rewrites its status file on its own report interval
        wait_for(
            lambda: "connected to lmaster" in run("lagent", "-p", str(agent.pidfile), "status").stdout,
            20,
            "lagent status saying it is connected",
            interval=0.2,
        )
    assert carbon.metric_paths() == set()
    assert not (tmp_path / "lagent.log").exists()
