"""``[sensor:NAME]``: one section per sensor to run, its keys declared by the sensor class.

The sensors' options stay where the sensors are (each class's ``options``);
this module asks the sensor registry for them only when a file is read, so
importing the configuration does not import psutil.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..adaptive import (
    FAST_HOLD,
    FAST_INTERVAL,
    FAST_KEYS,
    FAST_WHEN,
    GENERIC_OPTIONS_HELP,
    FastSampling,
    parse_condition,
    parse_fast,
)
from .loader import NamedRead
from .reader import IniFile
from .record import FrozenRecord
from .schema import Key, NamedSection, Variant
from .values import parse_positive_float

GENERIC_DOCS = dict(line.split(": ", 1) for line in GENERIC_OPTIONS_HELP)
"""The generic keys' docs, as ``lagent sensors`` shows them."""


class SensorConfig(FrozenRecord):
    name: str
    interval: float
    settings: dict[str, Any]
    fast: FastSampling | None = None
    """adaptive sampling (fructosa/adaptive.py), None when the sensor keeps one interval."""


def sensor_registry() -> Mapping[str, Any]:
    """The registered sensor classes; imported here, at validation time, not with the configuration."""
    from ..sensors import REGISTRY

    return REGISTRY


def _parse_when(text: str) -> Any:
    return parse_condition(text, sensor_registry())


TIME_INTERVAL = "time_interval"

COMMON_KEYS = (
    Key(TIME_INTERVAL, "interval", parse_positive_float, GENERIC_DOCS[TIME_INTERVAL], None),  # each sensor's own
    Key(FAST_INTERVAL, "fast.interval", parse_positive_float, GENERIC_DOCS[FAST_INTERVAL], None, optional=True),
    Key(FAST_WHEN, "fast.when", _parse_when, GENERIC_DOCS[FAST_WHEN], None, optional=True),
    Key(FAST_HOLD, "fast.hold", parse_positive_float, GENERIC_DOCS[FAST_HOLD], None, optional=True),
)


class SensorVariants(Mapping[str, Variant]):
    """Every registered sensor as a :class:`Variant`, with its own ``time_interval``
    default and its options, built when first asked for: checking a file's
    sections looks up only the sensors it configures, so loading it imports
    only their modules (listing the names imports none)."""

    def __init__(self, registry: Mapping[str, Any]) -> None:
        self._registry = registry
        self._built: dict[str, Variant] = {}

    def __getitem__(self, name: str) -> Variant:
        variant = self._built.get(name)
        if variant is None:
            sensor_class = self._registry[name]
            variant = self._built[name] = Variant(
                name,
                sensor_class.description,
                tuple(
                    Key(option.key, f"settings.{option.key}", option.parse, option.help, option.default)
                    for option in sensor_class.options
                ),
                {"interval": sensor_class.default_interval},
            )
        return variant

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)


def sensor_variants() -> Mapping[str, Variant]:
    """Every registered sensor's variant (see :class:`SensorVariants`)."""
    return SensorVariants(sensor_registry())


def build_sensor(read: NamedRead) -> SensorConfig:
    """One sensor's configuration; the ``fast …`` keys are checked together."""
    values = read.values
    settings = {path.removeprefix("settings."): value for path, value in values.items() if path.startswith("settings.")}
    try:
        fast = parse_fast(values["interval"], values["fast.interval"], values["fast.when"], values["fast.hold"])
    except ValueError as reason:
        key = next(key for key in FAST_KEYS if read.file.has(read.section, key))
        raise read.error(key, str(reason)) from None
    return SensorConfig(read.name, values["interval"], settings, fast)


def warn_unconfigured_conditions(file: IniFile, values: dict[str, Any]) -> None:
    """A ``fast when`` on a sensor that does not run never holds: say so."""
    sensors = values["sensors"]
    configured = {sensor.name for sensor in sensors}
    for sensor in sensors:
        for metric in sorted(sensor.fast.when.metrics if sensor.fast else ()):
            if metric.split(".", 1)[0] not in configured:
                file.warn(
                    f"[sensor:{sensor.name}] {FAST_WHEN} refers to {metric!r}"
                    " but that sensor is not configured: the condition never holds"
                )


SENSORS = NamedSection(
    kind="sensor",
    field="sensors",
    doc="Sensors: a sensor runs only if its section is present, each on its own schedule;"
    " lagent sensors NAME explains one and shows its paths on this host.",
    build=build_sensor,
    variants=sensor_variants,
    common_keys=COMMON_KEYS,
)
