"""What a node is, told to lmaster in the hello: static facts, GPU count and sensor intervals.

lmaster serves them in its HTTP API (``/api/nodes``: architecture, CPUs,
memory, boot time, OS, GPUs, each sensor's interval) without a Graphite
series of their own. The static part is read once per process; the GPU count
and the sensors' intervals change (a GPU sensor's first read, adaptive
sampling, a reload), so the sender compares them with what it last told and
sends the news in a heartbeat (see :mod:`fructosa.wire.protocol`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import sys

import psutil

from ..wire import protocol

log = logging.getLogger(__package__)


@functools.cache
def static_facts() -> dict:
    """Architecture, CPUs, memory, boot time, OS: read once (``platform.platform()`` reads files)."""
    facts: dict = {
        "cpu": platform.machine() or None,
        "cpus": os.cpu_count(),
        "system": platform.system() or None,
        "platform": platform.platform() or None,
    }
    try:
        facts["memory_bytes"] = psutil.virtual_memory().total
        facts["boot_time"] = psutil.boot_time()
    except (OSError, RuntimeError) as error:
        log.debug("memory or boot time unknown: %s", error)
    return {name: value for name, value in facts.items() if value is not None}


def gpu_count() -> int:
    """GPU boards NVML sees, when the GPU sensor has already loaded it; else 0 (pynvml is never imported here)."""
    nvml = sys.modules.get("pynvml")
    if nvml is None:
        return 0
    try:
        return int(nvml.nvmlDeviceGetCount())
    except Exception:  # not initialised, or no driver: the sensor reports why
        return 0


def hello_facts(sensors: dict[str, float]) -> dict:
    """The hello's ``facts``; the sensor intervals are left out should they not fit the hello's size limit."""
    facts = {**static_facts(), "gpus": gpu_count(), "sensors": sensors}
    if len(json.dumps(facts)) > protocol.MAX_HELLO // 2:
        log.warning("%d sensors: too many to list in the hello; lmaster will not show their intervals", len(sensors))
        del facts["sensors"]
    return facts
