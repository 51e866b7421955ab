"""The OpenRC scripts (openrc/) and systemd units (systemd/), run for real.

OpenRC is seldom installed where the tests run, so each script runs under
``OPENRC_RUN`` below: a few lines of sh that stand in for openrc-run 0.45 as
far as these scripts need it (source the conf.d file, then the script, then
``COMMAND_pre``, ``COMMAND``, ``COMMAND_post``; OpenRC's default start, which
runs the command with start-stop-daemon as ``ssd_start`` does; the
``ebegin``/``eend`` family; ``rc-service``). What the scripts themselves do
runs unchanged against real lagent and lmaster processes in a temporary
directory, on 127.0.0.1. The scripts were also run under the real OpenRC
0.45 (Debian 12) by hand; see docs/install.md. The systemd units' Exec lines run the same way, as systemd would
run them for ``start``, ``reload`` and ``stop``; ``systemd-analyze verify``
checks the units where it is installed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fructosa import config
from fructosa.daemon import process_alive, running_pid
from tests.support.carbon import free_ports
from tests.support.configs import agent_ini, master_ini
from tests.support.daemons import script
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
OPENRC, SYSTEMD = REPO / "openrc", REPO / "systemd"
PROGRAMS = ("lmaster", "lagent")
TIMEOUT = 60  # seconds for any one command; a stop waits at most 20 s

OPENRC_RUN = r"""
# usage: sh openrc-run.sh /path/to/init.d/SCRIPT COMMAND
# Environment: CONFD (the conf.d directory), RC_CMD (restart when the test
# plays openrc's restart: stop, then start), and PATH with the stand-ins for
# start-stop-daemon and rc-service first.
RC_SERVICE=$1
RC_SVCNAME=${RC_SERVICE##*/}
RC_CMD=${RC_CMD:-$2}
export RC_SERVICE RC_SVCNAME

ebegin() { printf ' * %s ...\n' "$*"; }
_end() {
    _how=$1 _rc=${2:-0}
    shift 2
    [ "$_rc" -eq 0 ] || { [ $# -eq 0 ] || $_how "$*"; echo ' [ !! ]'; return "$_rc"; }
    echo ' [ ok ]'
}
eend() { _end eerror "$@"; }
ewend() { _end ewarn "$@"; }
einfo() { printf ' * %s\n' "$*"; }
ewarn() { printf ' * %s\n' "$*" >&2; }
eerror() { printf ' * %s\n' "$*" >&2; }
for _dep in need use want after before provide keyword config; do
    eval "$_dep() { echo $_dep \"\$*\"; }"
done

# OpenRC's defaults: start as sh/start-stop-daemon.sh's ssd_start; stop is
# the scripts' own; status asks the daemon, where openrc-run would look at
# its own records.
start() {
    ebegin "Starting ${name:-$RC_SVCNAME}"
    eval start-stop-daemon --start --exec $command ${pidfile:+--pidfile} $pidfile -- $command_args
    eend $? "Failed to start ${name:-$RC_SVCNAME}"
}
stop() {
    eerror "stand-in: the scripts define their own stop"
    return 1
}
status() { "$command" -p "$pidfile" status >/dev/null; }

[ ! -e "$CONFD/$RC_SVCNAME" ] || . "$CONFD/$RC_SVCNAME"
. "$RC_SERVICE"

_func=$2
if [ "$_func" = depend ]; then depend; exit 0; fi
case " start stop status $extra_commands $extra_started_commands " in
    *" $_func "*) ;;
    *) eerror "$RC_SVCNAME: command '$_func' not a default nor extra command"; exit 1 ;;
esac
[ "$(command -v "${_func}_pre")" = "${_func}_pre" ] && { "${_func}_pre" || exit $?; }
"$_func" || exit $?
[ "$(command -v "${_func}_post")" = "${_func}_post" ] && { "${_func}_post" || exit $?; }
exit 0
"""

START_STOP_DAEMON = r"""#!/bin/sh
# start-stop-daemon --start, as OpenRC's ssd_start runs it (nothing else is
# used); what it is asked goes to $SSD_LOG.
exec= pidfile=
while [ $# -gt 0 ]; do
    case $1 in
        --start) ;;
        --exec) exec=$2; shift ;;
        --pidfile) pidfile=$2; shift ;;
        --) shift; break ;;
        *) echo "start-stop-daemon stand-in: unexpected option $1" >&2; exit 1 ;;
    esac
    shift
done
echo "start $exec $pidfile $*" >>"$SSD_LOG"
# Without --background it runs the command, and exits with its status.
[ -x "$exec" ] || { echo "start-stop-daemon: $exec does not exist" >&2; exit 1; }
exec "$exec" "$@"
"""

RC_SERVICE = r"""#!/bin/sh
# rc-service SERVICE COMMAND: lmaster and lagent run their scripts under
# the stand-in; any other service is a fake that starts and stops (or
# fails, if named in $FAILING). Calls go to $RC_SERVICE_LOG.
echo "$1 $2" >>"$RC_SERVICE_LOG"
case $1 in
    lmaster | lagent) RC_CMD=$2 exec sh "$OPENRC_RUN" "${RC_SERVICE%/*}/$1" "$2" ;;
esac
case " $FAILING " in *" $1 "*) exit 1 ;; esac
case $2 in
    start) touch "$STATE/$1" ;;
    stop) rm -f "$STATE/$1" ;;
    status) [ -e "$STATE/$1" ] ;;
esac
"""


# -- configurations and daemons in a temp dir ---------------------------------


def config_text(program: str, workdir: Path, port: int, broken: bool = False) -> str:
    """A configuration that keeps everything in ``workdir``; ``broken`` gives
    it a malformed value, which ``check`` refuses."""
    listen = "seven" if broken else port
    if program == "lmaster":
        (carbon_port,) = free_ports(1)  # nothing listens: lmaster spools
        return master_ini(workdir, listen, carbon_port)
    return agent_ini(workdir, listen)


def log_text(workdir: Path, program: str) -> str:
    path = workdir / f"{program}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def reloads(workdir: Path, program: str) -> int:
    return len(re.findall(r"reloaded", log_text(workdir, program), flags=re.IGNORECASE))


def assert_clean_exits(workdir: Path, program: str) -> None:
    """SIGTERM must stop the daemon cleanly (flushing and spooling), not as a crash."""
    log = log_text(workdir, program)
    assert "Traceback" not in log and " crashed" not in log, f"{program} did not stop cleanly:\n{log}"


@pytest.fixture
def pidfiles() -> Iterator[list[Path]]:
    """Pidfiles of daemons a test may leave running: SIGKILLed by their pid."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        pid = running_pid(str(path))
        if pid and pid > 0:
            os.kill(pid, signal.SIGKILL)


class OpenRC:
    """Runs ``openrc/SCRIPT COMMAND`` under the stand-in, with conf.d files
    in ``workdir/conf.d`` (the shipped ones, plus what a test appends)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.confd = workdir / "conf.d"
        shutil.copytree(OPENRC / "conf.d", self.confd)
        self.runner = workdir / "openrc-run.sh"
        self.runner.write_text(OPENRC_RUN)
        self.bin = workdir / "bin"
        self.bin.mkdir()
        for name, text in (("start-stop-daemon", START_STOP_DAEMON), ("rc-service", RC_SERVICE)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        (workdir / "state").mkdir()
        self.ssd_log = workdir / "start-stop-daemon.log"
        self.rc_service_log = workdir / "rc-service.log"
        self.ssd_log.touch()
        self.rc_service_log.touch()

    def configure(self, service: str, **variables: str) -> None:
        with (self.confd / service).open("a") as confd:
            confd.writelines(f"{key}={shlex.quote(value)}\n" for key, value in variables.items())

    def run(self, service: str, command: str, restart: bool = False, failing: str = "") -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "OPENRC_RUN": str(self.runner),
            "CONFD": str(self.confd),
            "SSD_LOG": str(self.ssd_log),
            "RC_SERVICE_LOG": str(self.rc_service_log),
            "STATE": str(self.workdir / "state"),
            "FAILING": failing,
            "RC_CMD": "restart" if restart else "",
        }
        return subprocess.run(
            ["sh", str(self.runner), str(OPENRC / service), command],
            capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd="/",
        )  # fmt: skip

    def rc_service_calls(self) -> list[str]:
        return self.rc_service_log.read_text().splitlines()


def daemon_status(program: str, pidfile: Path) -> int:
    return subprocess.run(
        [script(program), "-p", str(pidfile), "status"], capture_output=True, timeout=TIMEOUT
    ).returncode


def configure_daemon(openrc: OpenRC, program: str, workdir: Path) -> tuple[Path, Path]:
    (port,) = free_ports(1)
    conf, pidfile = workdir / f"{program}.conf", workdir / f"{program}.pid"
    conf.write_text(config_text(program, workdir, port))
    prefix = program.upper()
    openrc.configure(
        program,
        **{
            f"{prefix}_CONFIG": str(conf),
            f"{prefix}_PIDFILE": str(pidfile),
            f"{prefix}_COMMAND": script(program),
            f"{prefix}_STOP_TIMEOUT": "20",
        },
    )
    return conf, pidfile


# -- OpenRC ---------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(p for p in OPENRC.rglob("*") if p.is_file()), ids=lambda p: p.name)
def test_openrc_files_are_sh(path: Path) -> None:
    result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    if path.parent == OPENRC:  # init.d scripts
        assert path.read_text().startswith("#!/sbin/openrc-run\n")
        assert os.access(path, os.X_OK), f"{path} must be executable"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (Debian: shellcheck)")
def test_openrc_files_pass_shellcheck() -> None:
    # Not findings: variables that openrc-run reads (SC2034), local (SC3043:
    # OpenRC's shells have it), and conf.d files opening with "# /etc/...".
    files = sorted(str(p) for p in OPENRC.rglob("*") if p.is_file())
    result = subprocess.run(
        ["shellcheck", "-s", "sh", "-e", "SC2034,SC3043,SC1113,SC2096", *files],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_openrc_dependencies(tmp_path: Path) -> None:
    openrc = OpenRC(tmp_path)
    depends = {}
    for service in ("lmaster", "lagent", "fructosa"):
        result = openrc.run(service, "depend")
        assert result.returncode == 0, result.stderr
        depends[service] = set(result.stdout.splitlines())
    assert {"need net", "after carbon-cache"} <= depends["lmaster"]
    assert {"need net", "after lmaster"} <= depends["lagent"]
    assert "need net" in depends["fructosa"]


@pytest.mark.parametrize("program", PROGRAMS)
def test_openrc_script_drives_the_daemon(program: str, tmp_path: Path, pidfiles: list[Path]) -> None:
    openrc = OpenRC(tmp_path)
    conf, pidfile = configure_daemon(openrc, program, tmp_path)
    pidfiles.append(pidfile)
    good, broken = conf.read_text(), config_text(program, tmp_path, 1, broken=True)

    # checkconfig, and start_pre calling it: a bad configuration starts nothing.
    conf.write_text(broken)
    checked = openrc.run(program, "checkconfig")
    assert checked.returncode != 0
    assert "incoming data port" in checked.stderr and "seven" in checked.stderr, checked.stderr
    assert openrc.run(program, "start").returncode != 0
    assert not pidfile.exists() and "start " not in openrc.ssd_log.read_text()
    conf.write_text(good)
    assert openrc.run(program, "checkconfig").returncode == 0

    started = openrc.run(program, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = running_pid(str(pidfile))
    assert pid and pid > 0, "start returned before the daemon wrote its pidfile"
    assert daemon_status(program, pidfile) == 0

    # reload: checkconfig, then SIGHUP; the daemon says it reloaded.
    reloaded = openrc.run(program, "reload")
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    wait_for(lambda: reloads(tmp_path, program) == 1, 15, f"{program} to log its reload")
    # A broken configuration is neither reloaded nor allowed to stop it for a restart.
    conf.write_text(broken)
    assert openrc.run(program, "reload").returncode != 0
    assert openrc.run(program, "stop", restart=True).returncode != 0
    assert running_pid(str(pidfile)) == pid
    conf.write_text(good)
    assert openrc.run(program, "stop", restart=True).returncode == 0
    assert openrc.run(program, "start", restart=True).returncode == 0
    new_pid = running_pid(str(pidfile))
    assert new_pid and new_pid not in (pid, -1)
    assert reloads(tmp_path, program) == 1

    stopped = openrc.run(program, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert daemon_status(program, pidfile) == 3
    assert not pidfile.exists()
    assert not process_alive(new_pid)
    assert_clean_exits(tmp_path, program)


def test_fructosa_script_starts_in_order_and_stops_in_reverse(tmp_path: Path, pidfiles: list[Path]) -> None:
    openrc = OpenRC(tmp_path)
    _, pidfile = configure_daemon(openrc, "lmaster", tmp_path)
    pidfiles.append(pidfile)
    # FRUCTOSA_SERVICES as shipped ("carbon-cache lmaster"); the agents on
    # the nodes are a fake service here.
    openrc.configure("fructosa", FRUCTOSA_AGENTS_COMMAND="rc-service nodes")

    failed = openrc.run("fructosa", "start", failing="carbon-cache")
    assert failed.returncode != 0
    assert "carbon-cache did not start" in failed.stderr
    assert openrc.rc_service_calls() == ["carbon-cache start"]

    openrc.rc_service_log.write_text("")
    started = openrc.run("fructosa", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert openrc.rc_service_calls() == ["carbon-cache start", "lmaster start", "nodes start"]
    assert daemon_status("lmaster", pidfile) == 0
    status = openrc.run("fructosa", "status")
    assert status.returncode == 0
    assert "carbon-cache: started" in status.stdout and "lmaster: started" in status.stdout

    openrc.rc_service_log.write_text("")
    stopped = openrc.run("fructosa", "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert openrc.rc_service_calls() == ["nodes stop", "lmaster stop", "carbon-cache stop"]
    assert daemon_status("lmaster", pidfile) == 3
    status = openrc.run("fructosa", "status")
    assert status.returncode == 3 and "lmaster: not started" in status.stderr

    # Nodes that fail do not fail the head node.
    agents_failed = openrc.run("fructosa", "start", failing="nodes")
    assert agents_failed.returncode == 0
    assert "Some lagents did not start" in agents_failed.stderr
    assert openrc.run("fructosa", "stop").returncode == 0


# -- systemd --------------------------------------------------------------------


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """``{section: [(key, value), ...]}``, keys repeated as systemd allows;
    anything but comments, blank lines, sections and Key=Value fails."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(("#", ";")):
            continue
        if match := re.fullmatch(r"\[(\w+)\]", line):
            current = sections.setdefault(match.group(1), [])
            continue
        match = re.fullmatch(r"([A-Z][A-Za-z]+)=(.*)", line)
        assert match and current is not None, f"{path.name}:{number}: not a unit file line: {line!r}"
        current.append((match.group(1), match.group(2)))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [value for name, value in unit.get(section, []) if name == key]


def exec_argv(line: str, env: dict[str, str], program: str) -> list[str]:
    """An Exec line as systemd runs it: ``${NAME}`` is one word, the
    program found where it is installed (here: next to the test's Python)."""
    words = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word) for word in shlex.split(line)]
    assert words[0] == program, f"{line!r} should run {program}"
    return [script(program), *words[1:]]


def unit_environment(unit: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    env = {}
    for assignments in values(unit, "Service", "Environment"):
        for assignment in shlex.split(assignments):
            key, _, value = assignment.partition("=")
            env[key] = value
    return env


@pytest.mark.parametrize("program", PROGRAMS)
def test_systemd_unit_commands_drive_the_daemon(program: str, tmp_path: Path, pidfiles: list[Path]) -> None:
    unit = read_unit(SYSTEMD / f"{program}.service")
    assert values(unit, "Service", "Type") == ["simple"]
    (port,) = free_ports(1)
    conf, pidfile = tmp_path / f"{program}.conf", tmp_path / program / f"{program}.pid"
    conf.write_text(config_text(program, tmp_path, port))
    pidfile.parent.mkdir()  # RuntimeDirectory=
    pidfiles.append(pidfile)
    # What "systemctl edit" would set in a drop-in.
    env = {**unit_environment(unit), "FRUCTOSA_CONFIG": str(conf), "FRUCTOSA_PIDFILE": str(pidfile)}
    (start_pre,) = values(unit, "Service", "ExecStartPre")
    (start,) = values(unit, "Service", "ExecStart")
    (reload,) = values(unit, "Service", "ExecReload")

    def run(line: str) -> subprocess.CompletedProcess:
        return subprocess.run(exec_argv(line, env, program), capture_output=True, text=True, timeout=TIMEOUT)

    good, broken = conf.read_text(), config_text(program, tmp_path, port, broken=True)
    conf.write_text(broken)
    refused = run(start_pre)
    assert refused.returncode == 2 and "seven" in refused.stderr
    conf.write_text(good)
    checked = run(start_pre)
    assert checked.returncode == 0, checked.stderr

    log = (tmp_path / "journal").open("wb")
    daemon = subprocess.Popen(exec_argv(start, env, program), stdout=log, stderr=subprocess.STDOUT)
    try:
        # Type=simple: the process systemd started is the daemon (no fork).
        wait_for(lambda: running_pid(str(pidfile)) == daemon.pid or daemon.poll() is not None, 15, "the pidfile")
        assert daemon.poll() is None, (tmp_path / "journal").read_text()
        reloaded = run(reload)
        assert reloaded.returncode == 0, reloaded.stderr
        wait_for(lambda: reloads(tmp_path, program) == 1, 15, f"{program} to log its reload")
        conf.write_text(broken)
        assert run(reload).returncode != 0, "a configuration that does not load must fail the reload"
        # systemctl stop: SIGTERM to the main process, then wait TimeoutStopSec.
        daemon.send_signal(signal.SIGTERM)
        (timeout,) = values(unit, "Service", "TimeoutStopSec")
        assert daemon.wait(float(timeout)) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        log.close()
    assert reloads(tmp_path, program) == 1
    assert "--foreground" in start.split()
    assert_clean_exits(tmp_path, program)


@pytest.mark.parametrize("program", PROGRAMS)
def test_systemd_unit_lets_the_daemon_write_its_files(program: str) -> None:
    """The sandbox leaves writable what the daemon writes by default."""
    unit = read_unit(SYSTEMD / f"{program}.service")
    env = unit_environment(unit)
    default_config = {"lmaster": config.DEFAULT_MASTER_CONFIG, "lagent": config.DEFAULT_AGENT_CONFIG}[program]
    default_spool = {"lmaster": config.DEFAULT_MASTER_SPOOL, "lagent": config.DEFAULT_AGENT_SPOOL}[program]
    assert env["FRUCTOSA_CONFIG"] == default_config
    (runtime,) = values(unit, "Service", "RuntimeDirectory")
    assert Path(env["FRUCTOSA_PIDFILE"]).parent == Path("/run") / runtime
    (state,) = values(unit, "Service", "StateDirectory")
    assert Path(default_spool).is_relative_to(Path("/var/lib") / state)
    assert values(unit, "Service", "NoNewPrivileges") == ["yes"]
    if values(unit, "Service", "ProtectSystem") == ["strict"]:
        writable = [Path(p.lstrip("-")) for v in values(unit, "Service", "ReadWritePaths") for p in v.split()]
        log_file = Path(config.LoggingConfig().filename)
        assert any(log_file.is_relative_to(path) for path in writable), f"{log_file} is read-only"


def test_systemd_lmaster_is_sandboxed_and_lagent_sees_the_host() -> None:
    lmaster = dict(read_unit(SYSTEMD / "lmaster.service")["Service"])
    for key, value in {
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes", "ProtectControlGroups": "yes", "CapabilityBoundingSet": "",
    }.items():  # fmt: skip
        assert lmaster.get(key) == value, key
    assert set(lmaster["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    # lagent measures the host: DiskPartitions and DiskUsage must see its
    # mounts, not the read-only or hidden copies of a mount namespace.
    lagent = dict(read_unit(SYSTEMD / "lagent.service")["Service"])
    namespaced = {
        "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ProcSubset",
        "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths",
        "BindReadOnlyPaths", "PrivateMounts", "MountAPIVFS", "RootDirectory", "RootImage", "DynamicUser",
    }  # fmt: skip
    assert not namespaced & set(lagent), f"lagent.service must not set {sorted(namespaced & set(lagent))}"
    assert "AF_NETLINK" in lagent["RestrictAddressFamilies"].split()  # psutil.net_if_addrs()


def test_systemd_target_orders_the_head_node() -> None:
    target = read_unit(SYSTEMD / "fructosa.target")
    wanted = " ".join(values(target, "Unit", "Wants")).split()
    assert wanted == ["carbon-cache.service", "lmaster.service"]
    lmaster = read_unit(SYSTEMD / "lmaster.service")
    assert "carbon-cache.service" in " ".join(values(lmaster, "Unit", "After")).split()
    assert values(lmaster, "Unit", "PartOf") == ["fructosa.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (Debian: systemd)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify wants the programs installed; they are in this venv instead.
    for unit in sorted(SYSTEMD.iterdir()):
        text = re.sub(
            r"^(Exec\w*=)(lmaster|lagent) ",
            lambda m: f"{m.group(1)}{script(m.group(2))} ",
            unit.read_text(),
            flags=re.M,
        )
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(path) for path in tmp_path.iterdir())
    result = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=TIMEOUT)
    ours = [
        line for line in (result.stdout + result.stderr).splitlines() if any(u.name in line for u in SYSTEMD.iterdir())
    ]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr
