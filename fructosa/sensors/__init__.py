"""The sensor registry: every sensor module registers its classes on import.

``REGISTRY`` maps a sensor name (as in ``[sensor:NAME]``) to its class. A new
sensor is a class decorated with :func:`register` in one of these modules.
"""

from . import cpu, disk, gpu, hardware, memory, network, processes, prometheus, slurm, system  # noqa: F401  (registration)
from .base import NO_SAMPLE, REGISTRY, Option, Sensor, SensorUnsupported, as_plain, register

__all__ = ["NO_SAMPLE", "REGISTRY", "Option", "Sensor", "SensorUnsupported", "as_plain", "register"]
