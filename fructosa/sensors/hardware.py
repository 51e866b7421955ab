"""Hardware sensors: temperatures, fans, battery (where the host has them)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import psutil

from .base import Option, Sensor, SensorUnsupported, register


def _require(function_name: str) -> Any:
    function = getattr(psutil, function_name, None)
    if function is None:
        raise SensorUnsupported(f"psutil has no {function_name} on this platform")
    return function


def _labelled(entries: list[dict], fallback: str) -> list[tuple[str, dict]]:
    """(label, entry) pairs with unique labels.

    Unlabelled entries are ``FALLBACKN`` by their position (N from 1: psutil
    does not expose hwmon's own number). psutil merges chips of one driver
    into one list, so a dual-socket node has "Core 0" twice: the second one
    becomes "Core 0_2" instead of overwriting the first.
    """
    seen: Counter[str] = Counter()
    pairs = []
    for index, entry in enumerate(entries):
        label = entry.get("label") or f"{fallback}{index + 1}"
        seen[label] += 1
        pairs.append((label if seen[label] == 1 else f"{label}_{seen[label]}", entry))
    return pairs


PLAUSIBLE_THRESHOLD_C = 200.0
PLAUSIBLE_THRESHOLD_F = 392.0


def _plausible(threshold: float | None, limit: float) -> float | None:
    """A chip's high/critical threshold, or None for placeholders such as
    NVMe's 65261.85 °C that mean "no threshold"."""
    return threshold if threshold is not None and threshold <= limit else None


@register
class SensorsTemperatures(Sensor):
    """Hardware temperatures: ``HOST.SensorsTemperatures.CHIP.LABEL.current``,
    ``.high`` and ``.critical`` (thresholds only where the chip has a real
    one), e.g. ``coretemp.Core_0.current``. Unlabelled sensors are ``tempN``
    by position; a label seen twice in one chip (both sockets' "Core 0")
    gets ``_2``."""

    description = "temperatures per chip and sensor label, with thresholds"
    default_interval = 30.0
    options = (Option("fahrenheit", bool, False, "report degrees Fahrenheit instead of Celsius"),)

    def read(self) -> Any:
        return _require("sensors_temperatures")(fahrenheit=self.settings["fahrenheit"])

    def shape(self, raw: dict[str, list[dict]]) -> dict:
        if not raw:
            raise SensorUnsupported("no temperature sensors on this host")
        limit = PLAUSIBLE_THRESHOLD_F if self.settings["fahrenheit"] else PLAUSIBLE_THRESHOLD_C
        return {
            chip: {
                label: {
                    "current": entry.get("current"),
                    **{key: _plausible(entry.get(key), limit) for key in ("high", "critical")},
                }
                for label, entry in _labelled(entries, "temp")
            }
            for chip, entries in raw.items()
        }


@register
class SensorsFans(Sensor):
    """Fan speeds in RPM: ``HOST.SensorsFans.CHIP.LABEL`` (``fanN`` by position
    when unlabelled; a repeated label gets ``_2``)."""

    description = "fan speeds in RPM per chip and label"
    default_interval = 30.0

    def read(self) -> Any:
        return _require("sensors_fans")()

    def shape(self, raw: dict[str, list[dict]]) -> dict:
        if not raw:
            raise SensorUnsupported("no fans on this host")
        return {
            chip: {label: entry.get("current") for label, entry in _labelled(entries, "fan")}
            for chip, entries in raw.items()
        }


@register
class SensorsBattery(Sensor):
    """Battery: ``HOST.SensorsBattery.percent``, ``power_plugged`` (1/0) and
    ``secsleft`` (only while discharging with a known estimate)."""

    description = "battery charge, time left and whether on mains power"
    default_interval = 30.0

    def read(self) -> Any:
        battery = _require("sensors_battery")()
        if battery is None:
            raise SensorUnsupported("no battery on this host")
        return battery

    def shape(self, raw: dict) -> dict:
        secsleft = raw.get("secsleft")
        # psutil marks "unknown" and "unlimited" with enum members (names here).
        return {
            "percent": raw.get("percent"),
            "secsleft": secsleft if isinstance(secsleft, (int, float)) else None,
            "power_plugged": raw.get("power_plugged"),
        }
