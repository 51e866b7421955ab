"""The lagent/lmaster command lines: daemonizing, pidfiles, one-line errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from fructosa import __version__
from fructosa.daemon import process_alive, running_pid
from tests.support.carbon import free_ports
from tests.support.configs import DEFAULT_SENSORS, Options, agent_ini, master_ini
from tests.support.daemons import script
from tests.support.waiting import wait_for, wait_for_log


def run(program: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([script(program), *args], capture_output=True, text=True, timeout=timeout)


def agent_config(tmp_path: Path, master_port: int, sensors: Mapping[str, Options] = DEFAULT_SENSORS) -> Path:
    conf = tmp_path / "lagent.conf"
    conf.write_text(agent_ini(tmp_path, master_port, log=tmp_path / "agent.log", sensors=sensors))
    return conf


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The whole stderr, asserted to be exactly one line and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def daemon_pids() -> list[int]:
    """PIDs of daemons a test started; killed by PID if the test left them."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_start_status_second_start_stop(tmp_path: Path, daemon_pids: list[int]) -> None:
    (port,) = free_ports(1)
    conf, pidfile = agent_config(tmp_path, port), str(tmp_path / "lagent.pid")
    started = run("lagent", "-c", str(conf), "-p", pidfile, "start")
    assert started.returncode == 0, started.stderr
    pid = running_pid(pidfile)
    assert pid and pid != os.getpid()
    daemon_pids.append(pid)
    status = run("lagent", "-p", pidfile, "status")
    assert (status.returncode, status.stdout.strip()) == (0, f"lagent is running (pid {pid})")
    again = run("lagent", "-c", str(conf), "-p", pidfile, "start")
    assert again.returncode == 1
    assert one_line_error(again) == f"lagent: error: already running (pid {pid}, pidfile {pidfile})"
    # Detached: another session, not our child, working directory /.
    assert os.getsid(pid) != os.getsid(0)
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    stopped = run("lagent", "-p", pidfile, "stop")
    assert stopped.returncode == 0 and f"stopped (pid {pid})" in stopped.stdout
    assert not os.path.exists(pidfile)
    assert not process_alive(pid)
    assert run("lagent", "-p", pidfile, "status").returncode == 3
    assert "not running" in run("lagent", "-p", pidfile, "stop").stdout


def test_restart_replaces_the_process(tmp_path: Path, daemon_pids: list[int]) -> None:
    (port,) = free_ports(1)
    conf = tmp_path / "lmaster.conf"
    conf.write_text(master_ini(tmp_path, port, log=tmp_path / "m.log"))
    pidfile = str(tmp_path / "lmaster.pid")
    assert run("lmaster", "-c", str(conf), "-p", pidfile, "start").returncode == 0
    first = running_pid(pidfile)
    daemon_pids.append(first)
    restarted = run("lmaster", "-c", str(conf), "-p", pidfile, "restart")
    assert restarted.returncode == 0, restarted.stderr
    second = running_pid(pidfile)
    daemon_pids.append(second)
    assert second and second != first
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    assert run("lmaster", "-p", pidfile, "stop").returncode == 0
    log = (tmp_path / "m.log").read_text()
    assert "lmaster stopped:" in log  # a clean exit of the detached daemon
    assert "crashed" not in log and "Traceback" not in log


def test_stale_pidfile_is_replaced(tmp_path: Path, daemon_pids: list[int]) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = tmp_path / "lagent.pid"
    pidfile.write_text(f"{dead.pid}\n")
    (port,) = free_ports(1)
    conf = agent_config(tmp_path, port)
    assert run("lagent", "-p", str(pidfile), "status").returncode == 3
    started = run("lagent", "-c", str(conf), "-p", str(pidfile), "start")
    assert started.returncode == 0, started.stderr
    pid = running_pid(str(pidfile))
    daemon_pids.append(pid)
    assert pid != dead.pid
    assert run("lagent", "-p", str(pidfile), "stop").returncode == 0
    assert f"replaced stale pidfile {pidfile} of pid {dead.pid}" in (tmp_path / "agent.log").read_text()


def test_kill_9_leaves_a_pidfile_that_counts_as_not_running(tmp_path: Path, daemon_pids: list[int]) -> None:
    (port,) = free_ports(1)
    conf, pidfile = agent_config(tmp_path, port), str(tmp_path / "lagent.pid")
    assert run("lagent", "-c", str(conf), "-p", pidfile, "start").returncode == 0
    pid = running_pid(pidfile)
    daemon_pids.append(pid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not process_alive(pid), 10, f"the killed agent (pid {pid}) gone")
    assert os.path.exists(pidfile)
    assert run("lagent", "-p", pidfile, "status").returncode == 3
    assert run("lagent", "-c", str(conf), "-p", pidfile, "start").returncode == 0
    daemon_pids.append(running_pid(pidfile))
    assert run("lagent", "-p", pidfile, "stop").returncode == 0


def test_foreground_logs_to_stderr_and_stops_on_sigterm(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    conf, pidfile = agent_config(tmp_path, port), str(tmp_path / "lagent.pid")
    proc = subprocess.Popen(
        [script("lagent"), "-c", str(conf), "-p", pidfile, "start", "-f"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_log(tmp_path / "agent.log", "sensor CPUPercent started", timeout=10)
        assert running_pid(pidfile) == proc.pid
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "sensor CPUPercent started, every 1 s" in stderr
    assert "lagent stopped" in stderr
    assert not os.path.exists(pidfile)


def test_version() -> None:
    for program in ("lagent", "lmaster"):
        result = run(program, "--version")
        assert result.stdout.strip() == f"{program} (FrUCToSA) {__version__}"


BAD_AGENT_CONFIGS = {
    "missing file": (None, "configuration file not found"),
    "bad port": (
        "[lmaster]\nincoming data port = seventy\n",
        "[lmaster] incoming data port = 'seventy': not an integer",
    ),
    "port range": ("[lmaster]\nincoming data port = 70000\n", "[lmaster] incoming data port = '70000': not a TCP port"),
    "negative interval": ("[sensor:CPUPercent]\ntime_interval = -5\n", "[sensor:CPUPercent] time_interval = '-5'"),
    "bad option": ("[sensor:DiskIOCounters]\nperdisk = maybe\n", "[sensor:DiskIOCounters] perdisk = 'maybe'"),
    "bad choice": (
        "[sensor:NetConnections]\nkind = sctp\n",
        "[sensor:NetConnections] kind = 'sctp': 'sctp' is not one of",
    ),
    "malformed ini": ("[lmaster\nhost = x\n", "malformed INI"),
    "no section header": ("host = x\n", "malformed INI"),
    "bad level": ("[logging]\nlevel = LOUD\n", "[logging] level = 'LOUD': not a log level"),
    "unwritable log": (
        "[logging]\nfilename = /nonexistent/dir/x.log\n",
        "[logging] filename = '/nonexistent/dir/x.log'",
    ),
    "unresolvable master": (
        "[lmaster]\nhost = no-such-host.invalid\n",
        "[lmaster] host = 'no-such-host.invalid': cannot resolve",
    ),
}


@pytest.mark.parametrize("case", BAD_AGENT_CONFIGS)
def test_bad_agent_config_is_one_line_naming_the_problem(tmp_path: Path, case: str) -> None:
    text, expected = BAD_AGENT_CONFIGS[case]
    conf = tmp_path / "lagent.conf"
    if text is not None:
        if "[logging]" not in text:
            text += f"\n[logging]\nfilename = {tmp_path / 'agent.log'}\n"
        conf.write_text(text)
    result = run("lagent", "-c", str(conf), "-p", str(tmp_path / "a.pid"), "start")
    assert result.returncode == 2
    line = one_line_error(result)
    assert line.startswith(f"lagent: error: {conf}")
    assert expected in line
    assert not (tmp_path / "a.pid").exists()


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        conf = tmp_path / "lmaster.conf"
        conf.write_text(master_ini(tmp_path, port, log=tmp_path / "m.log"))
        result = run("lmaster", "-c", str(conf), "-p", str(tmp_path / "m.pid"), "start")
    assert result.returncode == 2
    assert one_line_error(result) == (
        f"lmaster: error: {conf}: [lmaster] host = '127.0.0.1', incoming data port = {port}: "
        "cannot listen: Address already in use"
    )


def test_unknown_sensor_is_logged_and_skipped(tmp_path: Path, daemon_pids: list[int]) -> None:
    (port,) = free_ports(1)
    conf = agent_config(tmp_path, port, {**DEFAULT_SENSORS, "CPUPercnt": {"time_interval": 5}})
    pidfile = str(tmp_path / "lagent.pid")
    assert run("lagent", "-c", str(conf), "-p", pidfile, "start").returncode == 0
    daemon_pids.append(running_pid(pidfile))
    assert run("lagent", "-p", pidfile, "stop").returncode == 0
    log = (tmp_path / "agent.log").read_text()
    assert "[sensor:CPUPercnt] invalid sensor name; ignored (did you mean 'CPUPercent'?)" in log
    assert "1 sensors" in log


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["start", "--bogus"], ["stop", "--timeout", "soon"]])
def test_usage_errors_are_one_line(args: list[str]) -> None:
    result = run("lagent", *args)
    assert result.returncode == 2
    line = one_line_error(result)
    assert line.startswith("lagent") and ": error: " in line


def test_qmaster_alias_and_stop_without_pidfile(tmp_path: Path) -> None:
    from fructosa.config import load_agent_config

    conf = tmp_path / "old.conf"
    conf.write_text("[qmaster]\nhost = head01\nincoming data port = 7999\n")
    loaded = load_agent_config(str(conf))
    assert (loaded.master_host, loaded.master_port) == ("head01", 7999)
    result = run("lmaster", "-p", str(tmp_path / "none.pid"), "stop")
    assert result.returncode == 0 and "not running (no pidfile" in result.stdout
