"""Memory sensors: virtual memory and swap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psutil

from .base import Sensor, register


@register
class VirtualMemory(Sensor):
    """System memory in bytes and percent: ``HOST.VirtualMemory.FIELD``
    (total, available, percent, used, free, active, inactive, buffers,
    cached, shared, slab)."""

    description = "system memory usage (bytes and percent)"
    default_interval = 30.0
    blocking = False  # reads /proc or /sys only
    one_tuple = True

    def read(self) -> Any:
        return psutil.virtual_memory()

    def compact_reader(self) -> Callable[[], Any]:
        return psutil.virtual_memory


@register
class SwapMemory(Sensor):
    """Swap in bytes and percent, and bytes swapped in/out since boot
    (``sin``/``sout``, counters): ``HOST.SwapMemory.FIELD``."""

    description = "swap usage and swap-in/out counters"
    default_interval = 60.0
    blocking = False  # reads /proc or /sys only
    one_tuple = True

    def read(self) -> Any:
        return psutil.swap_memory()

    def compact_reader(self) -> Callable[[], Any]:
        return psutil.swap_memory
