"""Starting the programs under test on loopback, each pinned to given cores:
lmaster, lagent, Graphite's carbon-relay, carbon-c-relay and collectd.

Each peer runs with the configuration its benchmark section in benchmarks/README.md
describes (its usual production settings). Every program
runs in the foreground as our child and is stopped by its PID (``Proc.stop``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

from fructosa.daemon import running_pid
from tests.support.carbon import free_ports

from .measure import RELAY_CPU, REPO, SNAPSHOT_VARIABLE, VENV_BIN, Proc, can_connect, child_pythonpath, missing

APT_HINT = {
    "carbon-c-relay": "apt-get install -y --no-install-recommends carbon-c-relay",
    "collectd": "apt-get install -y --no-install-recommends collectd-core",
    "carbon-relay.py": "pip install carbon==1.1.10 (into .venv)",
}


def not_installed(program: str) -> str | None:
    """``"skipped (not installed: …)"`` when ``program`` is missing, else None."""
    if missing(program) is None:
        return None
    return f"skipped (not installed: {APT_HINT.get(program, program)})"


def lmaster_config(workdir: Path, port: int, pickle_port: int, line_port: int, max_connections: int = 4096) -> Path:
    """Benchmark settings: spool in ``workdir``, no self-metrics, log level
    WARNING, no secret; everything else at its default."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "lmaster.conf"
    path.write_text(
        f"""[lmaster]
host = 127.0.0.1
incoming data port = {port}
max connections = {max_connections}
spool dir = {workdir / "spool-lmaster"}
self metrics = no

[Graphite]
host = 127.0.0.1
carbon receiver pickle port = {pickle_port}
carbon receiver plaintext port = {line_port}

[logging]
filename = {workdir / "lmaster.log"}
level = WARNING
"""
    )
    return path


def start_lmaster(workdir: Path, pickle_port: int, line_port: int, cpus: set[int] = RELAY_CPU,
                  max_connections: int = 4096, gc_probe: bool = False) -> tuple[Proc, int]:  # fmt: skip
    """``lmaster start --foreground``; returns it and its agent port. With
    ``gc_probe`` it runs under :mod:`benchmarks.gc_probe`, which writes every
    garbage collection to ``workdir/gc.json`` at exit (diagnostics only)."""
    (port,) = free_ports(1)
    config = lmaster_config(workdir, port, pickle_port, line_port, max_connections)
    arguments = ["-c", str(config), "-p", str(workdir / "lmaster.pid"), "start", "--foreground"]
    if gc_probe:
        argv = [sys.executable, "-m", "benchmarks.gc_probe", *arguments]
        env = {"GC_PROBE_OUT": str(workdir / "gc.json"), "PYTHONPATH": child_pythonpath()}
    else:
        argv, env = [str(VENV_BIN / "lmaster"), *arguments], {}
    proc = Proc("lmaster", argv, workdir / "lmaster.out", cpus, env=env)
    proc.wait_ready(lambda: can_connect(port))
    return proc, port


SENSORS_AT_1S = (
    "CPUPercent", "VirtualMemory", "CPUTimes", "CPUTimesPercent", "CPUStats",
    "SwapMemory", "DiskUsage", "DiskIOCounters", "NetIOCounters",
)  # fmt: skip


def start_lagent(workdir: Path, master_port: int, cpus: set[int] = RELAY_CPU, install: Install | None = None) -> Proc:
    """lagent with the nine sensors of issue 7 at 1 s, other settings at their
    defaults; from ``install`` (see :func:`regular_install`), else from this
    venv (the developer's editable install, or a ``--commit`` snapshot)."""
    sections = "".join(f"\n[sensor:{name}]\ntime_interval = 1\n" for name in SENSORS_AT_1S)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "lagent.conf"
    config.write_text(
        f"""[lmaster]
host = 127.0.0.1
incoming data port = {master_port}

[lagent]
hostname = benchagent
spool dir = {workdir / "spool-lagent"}

[logging]
filename = {workdir / "lagent.log"}
level = WARNING
{sections}"""
    )
    return start_lagent_with(config, workdir, cpus, install)


def start_lagent_with(config: Path, workdir: Path, cpus: set[int], install: Install | None) -> Proc:
    """``lagent -c config start --foreground``, ready once its pidfile names it."""
    pidfile = workdir / "lagent.pid"
    bin_dir, env = (install.bin_dir, install.env) if install else (VENV_BIN, {})
    argv = [str(bin_dir / "lagent"), "-c", str(config), "-p", str(pidfile), "start", "--foreground"]
    proc = Proc("lagent", argv, workdir / "lagent.out", cpus, env=env)
    proc.wait_ready(lambda: running_pid(str(pidfile)) is not None)
    return proc


class Install:
    """A regular (not editable) installation of FrUCToSA in a venv of its own:
    how a user runs lagent after ``pip install .``."""

    def __init__(self, venv: Path, source: str) -> None:
        self.venv = venv
        self.bin_dir = venv / "bin"
        self.python = self.bin_dir / "python"
        self.source = source
        """What was installed: ``commit REV`` or ``working tree``."""
        self.env = {"PYTHONPATH": ""}
        """No snapshot or repository on the path: fructosa comes from the venv's site-packages (empty = unset)."""


INSTALLED_FILES = ("fructosa", "pyproject.toml", "setup.cfg", "README.md")
"""What building the package reads (README.md is its long description)."""


def regular_install(workdir: Path) -> Install:
    """Build FrUCToSA as measured (the ``--commit`` revision, else the working
    tree) and install it, not editable, into a new venv in ``workdir``: no
    network (``--no-index``, ``--no-build-isolation``: setuptools and wheel of
    this venv build it). Its dependencies (psutil, python-daemon, ...) are this
    venv's: one line in a ``.pth`` file puts this venv's site-packages at the
    end of ``sys.path``. Such a line only adds the directory; the ``.pth``
    files in it (the editable install's finder, which makes ``site`` import
    pathlib, urllib.parse, ipaddress, re... into every process) are not run.
    Checked before use: fructosa imports from the new venv, no editable finder
    is loaded, else RuntimeError."""
    source = workdir / "source"
    snapshot = os.environ.get(SNAPSHOT_VARIABLE)
    if snapshot:
        revision = snapshot.split("=", 1)[0]
        archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, *INSTALLED_FILES],
                                 capture_output=True, check=True)  # fmt: skip
        source.mkdir(parents=True)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
        described = f"commit {revision}"
    else:
        source.mkdir(parents=True)
        shutil.copytree(REPO / "fructosa", source / "fructosa", ignore=shutil.ignore_patterns("__pycache__"))
        for name in INSTALLED_FILES[1:]:
            shutil.copy2(REPO / name, source / name)
        described = "working tree"
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = Install(venv, described)
    site_packages = Path(
        subprocess.run([str(install.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       capture_output=True, text=True, check=True).stdout.strip()
    )  # fmt: skip
    ours = {sysconfig.get_paths()[kind] for kind in ("purelib", "platlib")}
    (site_packages / "benchmark-dependencies.pth").write_text("".join(f"{path}\n" for path in sorted(ours)))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(install.python), "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    if built.returncode != 0:
        raise RuntimeError(f"pip install of {described} failed (needs setuptools and wheel: scripts/setup-env): "
                           f"{built.stderr[-800:]}")  # fmt: skip
    check = subprocess.run(
        [str(install.python), "-c", "import sys, fructosa; print(fructosa.__file__); "
         "print(sorted(name for name in sys.modules if 'editable' in name))"],
        capture_output=True, text=True, check=True, env={**os.environ, **install.env}, cwd=venv,
    )  # fmt: skip
    location, finders = check.stdout.splitlines()
    if not Path(location).is_relative_to(site_packages) or finders != "[]":
        raise RuntimeError(f"not a regular install: fructosa from {location}, editable finders {finders}")
    return install


def start_carbon_relay(
    workdir: Path, sink_pickle_port: int, tuned: bool, cpus: set[int] = RELAY_CPU
) -> tuple[Proc, int]:
    """Graphite's carbon-relay, pickle in → pickle out to the sink. ``tuned``:
    MAX_QUEUE_SIZE = 100000 and USE_FLOW_CONTROL = False (peers-bench.md);
    otherwise their defaults (1000, True)."""
    line_port, pickle_port = free_ports(2)
    conf = workdir / "conf"
    for directory in (conf, workdir / "run", workdir / "log", workdir / "storage"):
        directory.mkdir(parents=True, exist_ok=True)
    tuning = "MAX_QUEUE_SIZE = 100000\nUSE_FLOW_CONTROL = False\n" if tuned else ""
    (conf / "carbon.conf").write_text(
        f"""[relay]
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line_port}
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle_port}
RELAY_METHOD = rules
DESTINATIONS = 127.0.0.1:{sink_pickle_port}
{tuning}PID_DIR = {workdir / "run"}
LOG_DIR = {workdir / "log"}
STORAGE_DIR = {workdir / "storage"}
CONF_DIR = {conf}
USER =
"""
    )
    (conf / "storage-schemas.conf").write_text("")
    (conf / "relay-rules.conf").write_text(f"[default]\ndefault = true\ndestinations = 127.0.0.1:{sink_pickle_port}\n")
    argv = [str(VENV_BIN / "python"), str(VENV_BIN / "carbon-relay.py"), f"--config={conf / 'carbon.conf'}",
            "--debug", "start"]  # fmt: skip
    proc = Proc("carbon-relay", argv, workdir / "carbon-relay.out", cpus)
    proc.wait_ready(lambda: can_connect(pickle_port) and can_connect(line_port))
    return proc, pickle_port


def start_c_relay(
    workdir: Path, sink_line_port: int, queue: int | None, cpus: set[int] = RELAY_CPU
) -> tuple[Proc, int]:
    """carbon-c-relay, plaintext in → plaintext out; ``queue``: its ``-q``
    (None: the default 25000), defaults otherwise (``-w 2``)."""
    (port,) = free_ports(1)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "c-relay.conf"
    config.write_text(
        f"listen type linemode 127.0.0.1:{port} proto tcp ;\n"
        f"cluster sink forward 127.0.0.1:{sink_line_port} ;\n"
        "match * send to sink stop ;\n"
    )
    argv = ["carbon-c-relay", "-f", str(config), "-s"] + (["-q", str(queue)] if queue else [])
    proc = Proc("carbon-c-relay", argv, workdir / "c-relay.out", cpus)
    proc.wait_ready(lambda: can_connect(port))
    return proc, port


COLLECTD_PLUGINS = ("cpu", "contextswitch", "memory", "swap", "df", "disk", "interface")
"""collectd's counterparts of the nine sensors: cpu (CPUPercent, CPUTimes,
CPUTimesPercent), contextswitch (CPUStats), memory (VirtualMemory), swap
(SwapMemory), df (DiskUsage), disk (DiskIOCounters), interface (NetIOCounters)."""


def start_collectd(workdir: Path, sink_line_port: int, cpus: set[int] = RELAY_CPU) -> Proc:
    """collectd at Interval 1 with the equivalent plugins, write_graphite to the sink."""
    base = workdir / "collectd"
    base.mkdir(parents=True, exist_ok=True)
    plugins = "".join(f"LoadPlugin {name}\n" for name in COLLECTD_PLUGINS)
    config = workdir / "collectd.conf"
    config.write_text(
        f"""Hostname "benchagent"
FQDNLookup false
BaseDir "{base}"
PIDFile "{base / "collectd.pid"}"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
Interval 1
LoadPlugin logfile
<Plugin logfile>
  LogLevel "warning"
  File "{workdir / "collectd.log"}"
</Plugin>
{plugins}<Plugin df>
  MountPoint "/"
</Plugin>
LoadPlugin write_graphite
<Plugin write_graphite>
  <Node "sink">
    Host "127.0.0.1"
    Port "{sink_line_port}"
    Protocol "tcp"
  </Node>
</Plugin>
"""
    )
    proc = Proc("collectd", ["collectd", "-f", "-C", str(config)], workdir / "collectd.out", cpus)
    proc.wait_ready(lambda: (base / "collectd.pid").exists() or proc.running, timeout=10)
    return proc


def hostname() -> str:
    return socket.gethostname().split(".", 1)[0]
