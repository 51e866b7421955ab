"""Configuration: 0.3.2 compatibility, examples, warnings, one-line errors, named sections."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from fructosa.config import ConfigError, load_agent_config, load_master_config
from fructosa.config.effective import effective_ini
from fructosa.config.examples import AGENT_CHOICES
from fructosa.config.loader import load
from fructosa.config.schema import Key, NamedSection, Schema
from fructosa.config.values import parse_positive_float
from fructosa.sensors import REGISTRY

REPO = Path(__file__).resolve().parent.parent


def test_seed_files_load_unchanged() -> None:
    seed = REPO / "tests" / "data" / "seed-003"
    agent = load_agent_config(str(seed / "lagent.conf"))
    assert (agent.master_host, agent.master_port) == ("localhost", 7888)
    assert len(agent.sensors) == 20  # all of 0.3.2's sensors; newer ones (GPU, TopProcesses…) are not in it
    assert {s.name: s.interval for s in agent.sensors}["BootTime"] == 300
    assert agent.logging.filename == "/tmp/limon.log" and agent.logging.max_bytes == 1073741824
    assert agent.warnings == ()
    assert any("[Graphite] is not used by lagent" in notice for notice in agent.notices)
    master = load_master_config(str(seed / "lmaster.conf"))
    assert (master.listen_host, master.listen_port) == ("localhost", 7888)
    assert (master.graphite.host, master.graphite.port, master.graphite.prefix) == ("localhost", 2004, "")
    assert master.logging.level == "DEBUG" and master.warnings == ()


def test_shipped_examples_are_complete_and_clean() -> None:
    agent = load_agent_config(str(REPO / "conf" / "lagent.conf"))
    assert agent.warnings == ()
    assert [sensor.name for sensor in agent.sensors] == list(REGISTRY)
    chosen = {(choice.section, choice.key) for choice in AGENT_CHOICES}
    for sensor in agent.sensors:  # every option is shown at its default, but for the deliberate choices
        defaults = {option.key: option.default for option in REGISTRY[sensor.name].options}
        differ = {key for key, value in sensor.settings.items() if value != defaults[key]}
        assert differ == {key for section, key in chosen if section == f"sensor:{sensor.name}"}, sensor.name
        assert sensor.settings.keys() == defaults.keys()
        assert sensor.interval == REGISTRY[sensor.name].default_interval
    master = load_master_config(str(REPO / "conf" / "lmaster.conf"))
    assert master.warnings == ()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "x.conf"
    path.write_text(text)
    return str(path)


def test_options_floats_aliases_and_warnings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[qmaster]\nhost = head\n[lagent]\nhostname = node07.cluster\n"
        "[sensor:DiskUsage]\ntime_interval = 0.5\npath = /, /home\n"
        "[sensor:NetIOCounters]\npernic = yes\npernick = no\n"
        "[sensor:Frobnicator]\n[sensor:CPUPercnt]\n[Grahpite]\n",
    )
    agent = load_agent_config(path)
    assert agent.master_host == "head" and agent.hostname == "node07"
    disk, net = agent.sensors
    assert (disk.interval, disk.settings["path"]) == (0.5, ("/", "/home"))
    assert net.settings == {"pernic": True}
    text = "\n".join(agent.warnings)
    assert "unknown key 'pernick' ignored (did you mean 'pernic'?)" in text
    assert "[sensor:Frobnicator] invalid sensor name; ignored\n" in text
    assert "[sensor:CPUPercnt] invalid sensor name; ignored (did you mean 'CPUPercent'?)" in text
    assert "unknown section [Grahpite] ignored (did you mean 'Graphite'?)" in text


@pytest.mark.parametrize(
    "text, message",
    [
        ("[Graphite]\nprefix = a..b\n", "[Graphite] prefix = 'a..b'"),
        ("[Graphite]\nmax queued datapoints = 0\n", "must be at least 1"),
        ("[lmaster]\npeer timeout = never\n", "[lmaster] peer timeout = 'never'"),
        ("[logging]\nmaxBytes = big\n", "[logging] maxBytes = 'big': not an integer"),
    ],
)
def test_master_errors_name_section_key_and_value(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_master_config(write(tmp_path, text))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_foreign_duplicate_and_aliased_sections(tmp_path: Path) -> None:
    agent = load_agent_config(
        write(
            tmp_path,
            "[lmaster]\nhost = new\n[qmaster]\nhost = old\n[Graphite]\nhost = carbon\n[logging]\nlog file = None\n",
        )
    )
    assert agent.master_host == "new" and agent.logging.filename is None
    assert agent.warnings == (f"{tmp_path / 'x.conf'}: both [lmaster] and [qmaster]; [qmaster] ignored",)
    assert agent.notices == (
        f"{tmp_path / 'x.conf'}: [Graphite] is not used by lagent: lmaster relays the samples to Graphite",
    )
    master = load_master_config(write(tmp_path, "[sensor:CPUPercent]\n[logging]\nmaxbyte = 5\n"))
    assert [warning.split(": ", 1)[1] for warning in master.warnings] == [
        "[sensor:CPUPercent] ignored: sensors run in lagent, not lmaster",
        "[logging] unknown key 'maxbyte' ignored (did you mean 'maxBytes'?)",
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[upstream]\ntls = yes\n", "[upstream] host is missing: which lmaster should this one relay to?"),
        ("[lmaster]\nsecret file = /nonexistent/secret\n", "[lmaster] secret file = '/nonexistent/secret': No such"),
        ("[lmaster]\nspool max size = 1K\n", "[lmaster] spool max size = '1K': a spool needs at least 64K"),
        ("[slurm]\nevents url = graphite/events\n", "[slurm] events url = 'graphite/events': not an http://"),
    ],
)
def test_master_cross_key_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_master_config(write(tmp_path, text))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_sensor_options_use_the_shared_parsers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_agent_config(write(tmp_path, "[sensor:TopProcesses]\ncount = 0\n"))
    assert str(error.value).endswith("[sensor:TopProcesses] count = '0': must be at least 1")


@dataclass(frozen=True)
class Alarm:
    name: str
    when: str
    repeat: float


@dataclass(frozen=True)
class AlarmsOnly:
    path: str
    alarms: tuple[Alarm, ...] = ()
    warnings: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()


def test_a_named_section_is_a_declaration(tmp_path: Path) -> None:
    """Any name accepted (no variants), keys declared once, one object built per section."""
    alarms = NamedSection(
        kind="alarm",
        field="alarms",
        doc="Alarms.",
        build=lambda read: Alarm(read.name, read.values["when"], read.values["repeat"]),
        common_keys=(
            Key("when", "when", str.strip, "condition", required="an alarm needs a condition"),
            Key("repeat", "repeat", parse_positive_float, "seconds between reminders", 3600.0),
        ),
    )
    schema = Schema("test", AlarmsOnly, "Test.", sections=(), named=(alarms,))
    loaded = load(
        schema, write(tmp_path, "[alarm:hot]\nwhen = CPU > 9\n[alarm:full]\nwhen = x\nrepeat = 60\nwen = 1\n")
    )
    assert loaded.alarms == (Alarm("hot", "CPU > 9", 3600.0), Alarm("full", "x", 60.0))
    assert loaded.warnings == (f"{tmp_path / 'x.conf'}: [alarm:full] unknown key 'wen' ignored (did you mean 'when'?)",)
    assert (
        effective_ini(schema, loaded)
        == "[alarm:hot]\nwhen = CPU > 9\nrepeat = 3600\n\n[alarm:full]\nwhen = x\nrepeat = 60\n"
    )
    with pytest.raises(ConfigError, match=r"\[alarm:cold\] when is missing: an alarm needs a condition"):
        load(schema, write(tmp_path, "[alarm:cold]\n"))
