"""Which metrics an agent configuration sends (``--agent-config``).

A dashboard drawn for every sensor and option shows empty panels on nodes
that run fewer: per-disk graphs without ``perdisk = yes``, a Processes row
without TopProcesses. :class:`Feeds` answers, for each
:class:`~.metrics.Metric`, whether an lagent.conf sends it, from the
metric's own sensor class and ``needs``; the layout then leaves out every
target, panel and row that would only ever say "No data".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import AgentConfig, SensorConfig
from ..sensors import REGISTRY
from .metrics import Metric


@dataclass(frozen=True)
class Feeds:
    """The sensors an agent runs, each with its options (defaults filled in);
    ``sensors=None`` (the default) stands for every sensor with every option,
    the dashboards of a command line without ``--agent-config``."""

    sensors: Mapping[str, Mapping[str, Any]] | None = None

    @classmethod
    def from_sensors(cls, sensors: Iterable[SensorConfig]) -> Feeds:
        """Options a section leaves out are the sensor's defaults, as in the agent."""
        configured = {}
        for sensor in sensors:
            defaults = {option.key: option.default for option in REGISTRY[sensor.name].options}
            configured[sensor.name] = {**defaults, **sensor.settings}
        return cls(configured)

    @classmethod
    def from_agent_config(cls, config: AgentConfig) -> Feeds:
        return cls.from_sensors(config.sensors)

    def runs(self, sensor_name: str) -> bool:
        return self.sensors is None or sensor_name in self.sensors

    def sends(self, metric: Metric) -> bool:
        """Whether the agent sends ``metric``: its sensor runs and ``needs`` holds."""
        if self.sensors is None:
            return True
        settings = self.sensors.get(metric.sensor_name)
        if settings is None:
            return False
        return metric.needs is None or metric.needs.holds(settings)

    def sends_any(self, metrics: Iterable[Metric]) -> bool:
        return any(self.sends(metric) for metric in metrics)


EVERYTHING = Feeds()
