"""lagent imports only the agent's half of FrUCToSA, and none of the standard library it does not use.

``lagent`` and ``lmaster`` enter through one module (fructosa.programs) and
share one configuration package; what lmaster alone needs (its schema, alarms,
jobs, sinks, the HTTP face, prometheus_client's server side) must stay out of
the agent's memory. So must what only a rare path needs (:data:`AGENT_NEVER`).
This is a structure test: it looks at ``sys.modules`` in a fresh interpreter,
it times nothing.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

from tests.support.configs import agent_ini

REPO = Path(__file__).resolve().parent.parent

NINE_SENSORS = (
    "CPUPercent", "VirtualMemory", "CPUTimes", "CPUTimesPercent", "CPUStats",
    "SwapMemory", "DiskUsage", "DiskIOCounters", "NetIOCounters",
)  # fmt: skip

LMASTER_ONLY = (
    "fructosa.config.master",
    "fructosa.config.alarms",
    "fructosa.config.jobs",
    "fructosa.alarms",
    "fructosa.jobs.tracker",
    "fructosa.master",
    "fructosa.sinks",
    "fructosa.taps",
    "fructosa.http",
    "fructosa.prometheus.exposition",
    "fructosa.prometheus.scrapes",
    "aiohttp",
    "prometheus_client",
)

AGENT_NEVER = (
    "ssl", "_ssl", "_hashlib",  # OpenSSL, without TLS (tests/test_agent_openssl.py)
    "tempfile", "shutil", "bz2", "lzma",  # fresh_files.py instead of tempfile.mkstemp; argparse's terminal width
    "encodings.idna", "unicodedata", "stringprep",  # resolving an ASCII master host
    "urllib.request", "http.client", "email",  # the Prometheus sensor, when it scrapes
    "logging.handlers", "pickle",  # logs.RotatingLogFile; S frames (wire/plain_pickle.py) are lmaster's
    "daemon", "difflib",  # python-daemon when detaching; a misspelt configuration's hint
    "random", "bisect",  # backoff.jitter uses os.urandom
    "platform", "zlib",  # the hello's platform fact from uname (agent/facts.py); the spool's CRC from binascii
    "argparse", "gettext", "fructosa.cli_parser",  # a plain 'start' is read by cli.plain_start
    "pathlib", "urllib.parse", "ipaddress", "ntpath",  # the spool uses os.path
    "fructosa.config.effective",  # 'check' prints the effective configuration, 'start' does not
    "ctypes",  # heap.give_back_free_heap calls malloc_trim through _ctypes, without the ctypes package
    # sensor modules of sensors not configured (the registry imports a module on first lookup), what they bring
    "fructosa.sensors.gpu", "fructosa.sensors.processes", "fructosa.sensors.hardware", "fructosa.sensors.prometheus",
    "fructosa.sensors.slurm", "fructosa.sensors.system", "fructosa.prometheus", "fructosa.jobs", "pynvml",
)  # fmt: skip
"""Modules lagent without TLS, with the nine sensors, never loads while starting and measuring."""

AGENT_START = """
import json, sys
from fructosa import cli, programs
args = cli.plain_start(programs.AGENT, ["-c", sys.argv[1], "-p", sys.argv[2], "start", "-f"])  # as cli.main does
cfg = programs.AGENT.load_config(args.config)
prepared = programs.prepare_agent(cfg, sys.argv[2] + ".status.json")
import asyncio  # what start() runs the agent with
import fructosa.agent
from fructosa.sensors import REGISTRY
for section in cfg.sensors:
    sensor = REGISTRY[section.name]()
    sensor.start()
    sensor.measure()
from fructosa.agent.facts import hello_facts
hello_facts({})  # the first hello's facts
from fructosa.heap import compiled_at_start_up, give_back_free_heap
trimmed = give_back_free_heap()  # once settled
compiled = compiled_at_start_up()
print(json.dumps({"modules": sorted(name for name, module in sys.modules.items() if module is not None),
                  "trimmed": trimmed, "compiled": compiled}))
"""

AGENT_RUN = """
import json, sys
from fructosa.programs import agent_main
status = agent_main(["-c", sys.argv[1], "-p", sys.argv[2], "check"])
from fructosa.agent import Agent  # what 'lagent start' imports next
import fructosa.sensors
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def run_python(code: str, *args: str) -> dict:
    """``code`` in a fresh interpreter as an installed lagent runs: ``-S`` with the
    repository and site-packages on the path, because a developer's editable
    install has ``site`` import pathlib, urllib.parse, re... into every process."""
    path = os.pathsep.join([str(REPO), *site.getsitepackages()])
    result = subprocess.run([sys.executable, "-S", "-c", code, *args], capture_output=True, text=True, timeout=60,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": path})  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_lagent_check_and_agent_import_no_lmaster_module(tmp_path: Path) -> None:
    conf = tmp_path / "lagent.conf"
    conf.write_text(agent_ini(tmp_path, 7888, sensors={name: {"time_interval": 1} for name in NINE_SENSORS}))
    outcome = run_python(AGENT_RUN, str(conf), str(tmp_path / "lagent.pid"))
    assert outcome["status"] == 0
    modules = set(outcome["modules"])
    assert "fructosa.config.agent" in modules and "fructosa.agent" in modules  # the probe did load the agent
    loaded = [name for name in modules if any(name == own or name.startswith(own + ".") for own in LMASTER_ONLY)]
    assert loaded == []


def test_configuration_package_still_exports_lmaster_names_on_demand() -> None:
    """The lmaster names are imported on first use, and every exported name resolves."""
    code = (
        "import json, sys, fructosa.config as config\n"
        "before = 'fructosa.config.master' in sys.modules\n"
        "from fructosa.config import MasterConfig, load_master_config\n"
        "missing = [name for name in config.__all__ if not hasattr(config, name)]\n"
        "print(json.dumps({'before': before, 'after': 'fructosa.config.master' in sys.modules,\n"
        "                  'same': config.MasterConfig is sys.modules['fructosa.config.master'].MasterConfig,\n"
        "                  'missing': missing}))\n"
    )
    outcome = run_python(code)
    assert outcome == {"before": False, "after": True, "same": True, "missing": []}


def test_lagent_start_and_sensors_load_no_rarely_needed_module(tmp_path: Path) -> None:
    """What ``lagent start`` does up to running (arguments, configuration, the
    agent's parts, asyncio) and one measurement of each of the nine sensors."""
    conf = tmp_path / "lagent.conf"
    conf.write_text(agent_ini(tmp_path, 7888, sensors={name: {"time_interval": 1} for name in NINE_SENSORS}))
    outcome = run_python(AGENT_START, str(conf), str(tmp_path / "lagent.pid"))
    modules = set(outcome["modules"])
    assert {"fructosa.agent.lagent", "asyncio", "psutil"} <= modules  # the probe did build the agent
    glibc = "CS_GNU_LIBC_VERSION" in getattr(os, "confstr_names", {}) and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    linux_glibc = sys.platform.startswith("linux") and glibc
    assert outcome["trimmed"] is (linux_glibc and outcome["compiled"])  # malloc_trim found and called when it pays
    loaded = [name for name in modules if any(name == own or name.startswith(own + ".") for own in AGENT_NEVER)]
    assert loaded == []
