"""Shared by test_golden.py and record.py: what a golden case is and how it runs.

A case is a folder ``testcases/<Sensor>/<case>/`` holding ``sensor.conf`` (one
``[sensor:<Sensor>]`` section), ``psutil.json`` (what the sensor's ``read()``
returned, in :func:`fructosa.sensors.as_plain` form) and ``expected.out``
(sorted Graphite plaintext lines, or the single line ``# unsupported``, or
the single line ``# no sample`` when the sensor has nothing to send yet, as a
rate on its first reading).
An optional ``xfail`` file holds the reason why the code does not yet send
what the sensor's docstring promises; the case then fails strictly.

Everything here goes through the agent's own code (config loader, registry,
``Sensor.measure``, :func:`sample_to_datapoints`), only ``read()`` is replaced
by the recording, so a golden case checks exactly what ``lagent`` would send.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fructosa.config import load_agent_config
from fructosa.graphite_paths import sample_to_datapoints
from fructosa.sensors import REGISTRY, Sensor, SensorUnsupported

CASES_DIR = Path(__file__).resolve().parent / "testcases"
HOST = "node01"
TIMESTAMP = 1700000000
UNSUPPORTED = "# unsupported"
"""The whole of ``expected.out`` when ``shape`` must raise SensorUnsupported."""
NO_SAMPLE = "# no sample"
"""The whole of ``expected.out`` when ``measure`` must return None (nothing to send this time)."""

CONF_FILE, INPUT_FILE, EXPECTED_FILE, XFAIL_FILE = "sensor.conf", "psutil.json", "expected.out", "xfail"


@dataclass(frozen=True)
class Case:
    """One golden case folder."""

    sensor: str
    name: str
    path: Path

    @property
    def id(self) -> str:
        return f"{self.sensor}/{self.name}"

    def read_input(self) -> Any:
        with open(self.path / INPUT_FILE, encoding="utf-8") as stream:
            return json.load(stream)

    def read_expected(self) -> list[str]:
        return (self.path / EXPECTED_FILE).read_text(encoding="utf-8").splitlines()

    def xfail_reason(self) -> str | None:
        marker = self.path / XFAIL_FILE
        return marker.read_text(encoding="utf-8").strip() if marker.exists() else None


def discover_cases(root: Path = CASES_DIR) -> list[Case]:
    """Every ``<Sensor>/<case>/`` folder below ``root``, sorted."""
    return [
        Case(sensor_dir.name, case_dir.name, case_dir)
        for sensor_dir in sorted(root.iterdir())
        if sensor_dir.is_dir()
        for case_dir in sorted(sensor_dir.iterdir())
        if case_dir.is_dir()
    ]


def load_sensor(conf_path: Path, sensor_name: str) -> Sensor:
    """The sensor configured by ``conf_path``, built as the agent builds it.

    A typo in a key would only be a warning to the agent (and the option
    silently left at its default), so here any warning is an error.
    """
    config = load_agent_config(str(conf_path))
    if config.warnings:
        raise ValueError("; ".join(config.warnings))
    names = [sensor.name for sensor in config.sensors]
    if names != [sensor_name]:
        raise ValueError(f"{conf_path}: expected exactly one [sensor:{sensor_name}] section, found {names}")
    (sensor_config,) = config.sensors
    return REGISTRY[sensor_config.name](sensor_config.settings)


def measure_recorded(sensor: Sensor, raw: Any) -> Any:
    """``sensor.measure()`` with ``read()`` replaced by the recorded output."""
    sensor.read = lambda: raw  # type: ignore[method-assign]
    return sensor.measure()


def format_value(value: float) -> str:
    """Integral values without ``.0`` (counters, bytes), others as ``repr``."""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def plaintext_lines(sensor_name: str, value: Any) -> list[str]:
    """Sorted ``path value timestamp`` lines of one sample of ``sensor_name``."""
    sample = {"host": HOST, "sensor": sensor_name, "time": TIMESTAMP, "value": value}
    return sorted(
        f"{path} {format_value(number)} {int(timestamp)}" for path, (timestamp, number) in sample_to_datapoints(sample)
    )


def expected_lines(sensor: Sensor, raw: Any) -> list[str]:
    """What ``expected.out`` should hold for ``raw`` according to the current code."""
    try:
        value = measure_recorded(sensor, raw)
    except SensorUnsupported:
        return [UNSUPPORTED]
    if value is None:
        return [NO_SAMPLE]
    return plaintext_lines(sensor.name, value)
