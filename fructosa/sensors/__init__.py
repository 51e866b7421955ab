"""The sensor registry: every sensor module registers its classes on import.

``REGISTRY`` maps a sensor name (as in ``[sensor:NAME]``) to its class. A new
sensor is a class decorated with :func:`register` in one of these modules,
and its name goes into :data:`SENSOR_MODULES`.

Importing this package imports no sensor module: ``REGISTRY`` knows from
:data:`SENSOR_MODULES` which module defines each sensor and imports that
module when one of its sensors is first looked up. Listing the names needs no
import. So an agent carries the modules of the sensors it runs (four for the
usual nine), not all ten with what they bring (NVML's bindings, Prometheus
parsing, Slurm job discovery...).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from importlib import import_module

from .base import NO_SAMPLE, Option, Sensor, SensorUnsupported, as_plain, register
from .base import REGISTRY as REGISTERED

SENSOR_MODULES: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUPercent", "CPUTimes", "CPUTimesPercent", "CPUCount", "CPUStats", "CPUFreq"),
    "disk": ("DiskPartitions", "DiskUsage", "DiskIOCounters"),
    "processes": ("TopProcesses",),
    "gpu": ("GPU",),
    "hardware": ("SensorsTemperatures", "SensorsFans", "SensorsBattery"),
    "memory": ("VirtualMemory", "SwapMemory"),
    "network": ("NetIOCounters", "NetConnections", "NetIFAddrs", "NetIFStats"),
    "prometheus": ("Prometheus",),
    "slurm": ("SlurmJobs",),
    "system": ("BootTime", "Users"),
}
"""Each sensor module of this package and the sensors it registers, in the
order listings show them (tests/test_sensor_registry.py checks it against
what the modules register)."""


class SensorRegistry(MutableMapping[str, type[Sensor]]):
    """Sensor name → class, importing a sensor's module on its first lookup.

    Names iterate without importing anything: the sensors of
    :data:`SENSOR_MODULES` in its order, then any class registered
    otherwise (tests register their own). Looking one up (``[]``, ``get``,
    ``items()``, ``values()``) imports what it needs. Only classes registered
    outside :data:`SENSOR_MODULES` can be removed.
    """

    def __init__(self, registered: dict[str, type[Sensor]], modules: dict[str, tuple[str, ...]]) -> None:
        self._registered = registered
        self._module_of = {name: module for module, names in modules.items() for name in names}

    def __getitem__(self, name: str) -> type[Sensor]:
        found = self._registered.get(name)
        if found is None and name in self._module_of:
            import_module(f"{__name__}.{self._module_of[name]}")
            found = self._registered.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._module_of or name in self._registered

    def __iter__(self) -> Iterator[str]:
        yield from self._module_of
        yield from [name for name in self._registered if name not in self._module_of]

    def __len__(self) -> int:
        return len(self._module_of) + sum(1 for name in self._registered if name not in self._module_of)

    def __setitem__(self, name: str, sensor_class: type[Sensor]) -> None:
        if name in self:
            raise RuntimeError(f"sensor {name} registered twice")
        self._registered[name] = sensor_class

    def __delitem__(self, name: str) -> None:
        if name in self._module_of:
            raise KeyError(f"{name} is one of this package's sensors: it cannot be removed")
        del self._registered[name]


REGISTRY = SensorRegistry(REGISTERED, SENSOR_MODULES)

__all__ = [
    "NO_SAMPLE",
    "REGISTRY",
    "SENSOR_MODULES",
    "Option",
    "Sensor",
    "SensorRegistry",
    "SensorUnsupported",
    "as_plain",
    "register",
]
