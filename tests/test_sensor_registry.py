"""The sensor registry imports a sensor's module on first lookup, and its table agrees with the modules.

``fructosa.sensors.SENSOR_MODULES`` names the module of every sensor, so that
importing the package imports none of them. These tests check that the table
says what the modules register (names and order), that a lookup imports only
the module it needs, and that listing and validation still see every sensor.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fructosa.sensors import REGISTRY, SENSOR_MODULES, Sensor, register
from fructosa.sensors.base import REGISTRY as REGISTERED

REPO = Path(__file__).resolve().parent.parent


LOADED = (
    "def loaded():\n"
    "    return sorted(m for m in sys.modules if m.startswith('fructosa.sensors.') and m != 'fructosa.sensors.base')\n"
)
"""Code for a fresh interpreter: the sensor modules it has imported."""


def fresh(code: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_table_names_what_each_module_registers_in_order() -> None:
    classes = dict(REGISTRY.items())  # imports every module
    by_module: dict[str, list[str]] = {}
    for name, sensor_class in REGISTERED.items():
        module = sensor_class.__module__
        if module.startswith("fructosa.sensors."):
            by_module.setdefault(module.removeprefix("fructosa.sensors."), []).append(name)
    assert {module: tuple(names) for module, names in by_module.items()} == SENSOR_MODULES
    assert list(classes)[: sum(map(len, SENSOR_MODULES.values()))] == [
        name for names in SENSOR_MODULES.values() for name in names
    ]
    assert all(issubclass(sensor_class, Sensor) for sensor_class in classes.values())


def test_importing_the_package_imports_no_sensor_module_and_a_lookup_only_its_own() -> None:
    outcome = fresh(
        "import json, sys\n"
        "from fructosa.sensors import REGISTRY\n"
        f"{LOADED}"
        "before = loaded(); names = list(REGISTRY); count = len(REGISTRY); known = 'GPU' in REGISTRY\n"
        "listed = loaded()\n"
        "cls = REGISTRY['DiskUsage']\n"
        "print(json.dumps({'before': before, 'listed': listed, 'after': loaded(), 'count': count,\n"
        "                  'names': len(names), 'known': known, 'cls': cls.__module__}))\n"
    )  # fmt: skip
    assert outcome["before"] == [] and outcome["listed"] == []
    assert outcome["after"] == ["fructosa.sensors.disk"]
    assert outcome["cls"] == "fructosa.sensors.disk"
    assert outcome["count"] == outcome["names"] == sum(map(len, SENSOR_MODULES.values()))
    assert outcome["known"] is True


def test_unknown_names_and_classes_registered_elsewhere() -> None:
    assert "NoSuchSensor" not in REGISTRY
    assert REGISTRY.get("NoSuchSensor") is None
    with pytest.raises(KeyError):
        REGISTRY["NoSuchSensor"]

    @register
    class RegistryTestSensor(Sensor):
        def read(self) -> int:
            return 1

    try:
        assert REGISTRY["RegistryTestSensor"] is RegistryTestSensor
        assert list(REGISTRY)[-1] == "RegistryTestSensor"
        assert len(REGISTRY) == sum(map(len, SENSOR_MODULES.values())) + 1
    finally:
        del REGISTRY["RegistryTestSensor"]
    assert "RegistryTestSensor" not in REGISTRY
    with pytest.raises(KeyError):
        del REGISTRY["CPUPercent"]
    assert "CPUPercent" in REGISTRY


def test_loading_a_configuration_imports_only_the_configured_sensors_modules(tmp_path: Path) -> None:
    """Validation looks up the sections' sensors only; a misspelt name is still reported with its hint."""
    conf = tmp_path / "lagent.conf"
    conf.write_text(
        f"[lmaster]\nhost = 127.0.0.1\n[lagent]\nspool dir = {tmp_path / 'spool'}\n"
        "[sensor:VirtualMemory]\ntime_interval = 1\n[sensor:SwapMemory]\ntime_interval = 1\n"
        "[sensor:DiskUsages]\ntime_interval = 1\n"
    )
    outcome = fresh(
        f"import json, sys\n{LOADED}"
        "from fructosa import programs\n"
        f"cfg = programs.AGENT.load_config({str(conf)!r})\n"
        "print(json.dumps({'sensors': [s.name for s in cfg.sensors], 'warnings': cfg.warnings,\n"
        "                  'loaded': loaded()}))\n"
    )  # fmt: skip
    assert outcome["sensors"] == ["VirtualMemory", "SwapMemory"]
    assert outcome["loaded"] == ["fructosa.sensors.memory"]
    assert any("DiskUsages" in warning and "DiskUsage" in warning for warning in outcome["warnings"]), outcome
