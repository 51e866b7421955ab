"""The schema is the one source: example files, effective configuration and layering agree with it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fructosa.config import (
    AGENT_SCHEMA,
    MASTER_SCHEMA,
    effective_agent_ini,
    effective_master_ini,
    load_agent_config,
    load_master_config,
)
from fructosa.config.effective import declared_default
from fructosa.config.examples import EXAMPLES, main, render
from fructosa.config.record import replace
from fructosa.config.schema import Key, Schema
from fructosa.dashboards import metrics

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_files_match_the_schema(name: str) -> None:
    schema, choices = EXAMPLES[name]
    assert (CONF / name).read_text() == render(schema, choices), (
        f"conf/{name} and the declarations disagree: run python -m fructosa.config.examples"
    )


def test_generator_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--output", str(tmp_path)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(EXAMPLES)
    assert main(["--output", str(tmp_path), "--check"]) == 0
    (tmp_path / "lagent.conf").write_text("# edited by hand\n")
    assert main(["--output", str(tmp_path), "--check"]) == 1
    assert "lagent.conf: out of date" in capsys.readouterr().out
    assert (tmp_path / "lagent.conf").read_text() == "# edited by hand\n"


def test_example_agent_feeds_every_node_dashboard_panel() -> None:
    """Every sensor a dashboard metric reads runs, with the options it needs (``needs=option_on("pernic")``)."""
    sensors = {sensor.name: sensor for sensor in load_agent_config(str(CONF / "lagent.conf")).sensors}
    needed = [value for value in vars(metrics).values() if isinstance(value, metrics.Metric)]
    assert len(needed) > 30
    for metric in needed:
        assert metric.sensor_name in sensors, metric
        # alternatives of one metric ("one path" / "several paths") exclude each other; options must be on
        if metric.needs is not None and re.fullmatch(r"\w+ = yes( or \w+ = yes)*", metric.needs.text):
            assert metric.needs.holds(sensors[metric.sensor_name].settings), (metric.sensor_name, metric.needs.text)


def _sensor_keys() -> list[tuple[str, Key]]:
    (named,) = AGENT_SCHEMA.named
    return [(f"sensor:{name}", key) for name, variant in named.variants().items() for key in named.keys_of(variant)]


def _all_keys() -> list[tuple[Schema | None, str, Key]]:
    keys: list[tuple[Schema | None, str, Key]] = [
        (schema, section.name, key) for schema in (AGENT_SCHEMA, MASTER_SCHEMA) for section in schema.sections
        for key in section.keys
    ]  # fmt: skip
    return keys + [(None, section, key) for section, key in _sensor_keys()]


def test_every_default_is_written_so_that_its_parser_reads_it_back() -> None:
    checked = 0
    for schema, section, key in _all_keys():
        default = declared_default(schema.root if schema else None, key)
        text = key.format(default)
        if default is None or text is None:
            continue
        assert key.parse(text) == default, (section, key.name, text)
        checked += 1
    assert checked > 60


def test_key_names_are_unique_per_section() -> None:
    for schema in (AGENT_SCHEMA, MASTER_SCHEMA):
        for section in schema.sections:
            names = [name.lower() for key in section.keys for name in key.names]
            assert len(names) == len(set(names)), section.name


def _comparable(cfg: Any) -> Any:
    """Without what the effective text cannot carry: where it came from, and whether the spool was set."""
    spool = replace(cfg.spool, explicit=False)
    return replace(cfg, path="", warnings=(), notices=(), spool=spool)


FULL_AGENT = """
[qmaster]
host = head01
incoming data port = 7999
tls = yes
[lagent]
hostname = node42
spool max size = 100K
heartbeat interval = 0.25
journal file = /tmp/journal.txt
[logging]
log file = None
level = debug
[sensor:CPUPercent]
time_interval = 2.5
total = yes
fast time_interval = 0.5
fast when = CPUPercent.total > 80 or VirtualMemory.percent >= 95.5
[sensor:VirtualMemory]
[sensor:DiskUsage]
path = /, /home
"""

FULL_MASTER = """
[lmaster]
host = 0.0.0.0
peer timeout = 2
accept relays = yes
spool max size = 3G
[Graphite]
destinations = c1:2004:a, [::1]:2104:b, c2:2004
replication factor = 2
prefix = hpc.site
resend window = 0.001
[upstream]
host = central
tls = yes
[slurm]
poll interval = 5
events url = http://graphite/events/
[logging]
filename = /tmp/lmaster.log
maxBytes = 1000
send to syslog = yes
"""


@pytest.mark.parametrize("text", ["", FULL_AGENT], ids=["empty", "full"])
def test_effective_agent_configuration_loads_back_the_same(tmp_path: Path, text: str) -> None:
    original = load_agent_config(str(_write(tmp_path / "a.conf", text)))
    effective = effective_agent_ini(original)
    again = load_agent_config(str(_write(tmp_path / "b.conf", effective)))
    assert _comparable(again) == _comparable(original)
    assert again.warnings == ()


@pytest.mark.parametrize("text", ["", FULL_MASTER], ids=["empty", "full"])
def test_effective_master_configuration_loads_back_the_same(tmp_path: Path, text: str) -> None:
    original = load_master_config(str(_write(tmp_path / "a.conf", text)))
    effective = effective_master_ini(original)
    again = load_master_config(str(_write(tmp_path / "b.conf", effective)))
    assert _comparable(again) == _comparable(original)
    assert again.warnings == ()
    assert ("[upstream]" in effective, "[slurm]" in effective) == (bool(text), bool(text))


def test_every_default_is_filled_in() -> None:
    defaults = load_master_config(str(CONF / "lmaster.conf"))
    text = effective_master_ini(defaults)
    assert "spool max size = 1G" in text and "#secret file =" in text and "resend window = 5" in text
    assert "#destinations =" in text and "carbon receiver pickle port = 2004" in text


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_configuration_and_logging_load_no_sensors() -> None:
    """psutil (and the sensors) come only with the sensor sections' validation, never with an import."""
    code = (
        "import sys, fructosa.logs\n"
        "assert 'fructosa.config' not in sys.modules, 'logs imports the configuration'\n"
        "import fructosa.config\n"
        "print(sorted(name for name in sys.modules if name == 'psutil' or name.startswith('fructosa.sensors')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
