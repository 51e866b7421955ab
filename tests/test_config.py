"""Configuration: 0.3.2 compatibility, examples, warnings and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fructosa.config import ConfigError, load_agent_config, load_master_config
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
    for sensor in agent.sensors:  # every option is shown at its default
        defaults = {option.key: option.default for option in REGISTRY[sensor.name].options}
        assert sensor.settings == defaults
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
        "[sensor:Frobnicator]\n[Grahpite]\n",
    )
    agent = load_agent_config(path)
    assert agent.master_host == "head" and agent.hostname == "node07"
    disk, net = agent.sensors
    assert (disk.interval, disk.settings["path"]) == (0.5, ("/", "/home"))
    assert net.settings == {"pernic": True}
    text = "\n".join(agent.warnings)
    assert "unknown key 'pernick' ignored (did you mean 'pernic'?)" in text
    assert "[sensor:Frobnicator] invalid sensor name; ignored" in text
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
