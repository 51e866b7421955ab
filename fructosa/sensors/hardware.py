"""Hardware sensors: temperatures, fans, battery (where the host has them)."""

from __future__ import annotations

from typing import Any

import psutil

from .base import Option, Sensor, SensorUnsupported, register


def _require(function_name: str) -> Any:
    function = getattr(psutil, function_name, None)
    if function is None:
        raise SensorUnsupported(f"psutil has no {function_name} on this platform")
    return function


def _label(entry: dict, index: int, fallback: str) -> str:
    """A sensor's label, or ``FALLBACKN`` (N from 1, like hwmon) when it has none."""
    return entry.get("label") or f"{fallback}{index + 1}"


@register
class SensorsTemperatures(Sensor):
    """Hardware temperatures: ``HOST.SensorsTemperatures.CHIP.LABEL.current``,
    ``.high`` and ``.critical`` (thresholds only where the chip has them),
    e.g. ``coretemp.Core_0.current``. Unlabelled sensors are ``tempN``."""

    description = "temperatures per chip and sensor label, with thresholds"
    default_interval = 30.0
    options = (Option("fahrenheit", bool, False, "report degrees Fahrenheit instead of Celsius"),)

    def read(self) -> Any:
        return _require("sensors_temperatures")(fahrenheit=self.settings["fahrenheit"])

    def shape(self, raw: dict[str, list[dict]]) -> dict:
        if not raw:
            raise SensorUnsupported("no temperature sensors on this host")
        return {
            chip: {
                _label(entry, index, "temp"): {key: entry.get(key) for key in ("current", "high", "critical")}
                for index, entry in enumerate(entries)
            }
            for chip, entries in raw.items()
        }


@register
class SensorsFans(Sensor):
    """Fan speeds in RPM: ``HOST.SensorsFans.CHIP.LABEL`` (``fanN`` when unlabelled)."""

    description = "fan speeds in RPM per chip and label"
    default_interval = 30.0

    def read(self) -> Any:
        return _require("sensors_fans")()

    def shape(self, raw: dict[str, list[dict]]) -> dict:
        if not raw:
            raise SensorUnsupported("no fans on this host")
        return {
            chip: {_label(entry, index, "fan"): entry.get("current") for index, entry in enumerate(entries)}
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
