"""What a node is, told to lmaster in the hello: static facts, GPUs and sensor intervals.

lmaster serves them in its HTTP API (``/api/nodes``: architecture, CPUs,
memory, boot time, OS, GPUs, each sensor's interval) without a Graphite
series of their own. The static part is read once per process; the GPU count
and the sensors' intervals change (the GPU sensor's first read, adaptive
sampling, a reload), so the sender compares them with what it last told and
sends the news in a heartbeat (see :mod:`fructosa.wire.protocol`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys

import psutil

from ..wire import protocol

log = logging.getLogger(__package__)


def platform_name() -> str | None:
    """``platform.platform()``'s answer on Linux with glibc (``Linux-6.1.0-21-amd64-x86_64-with-glibc2.36``),
    from ``uname`` and the C library's own version string. The :mod:`platform` module would cost the
    daemon ~0.14 MB for good and fork ``uname -p`` once, for a processor name it leaves out on Linux
    (``unknown``, or the machine again); any other system asks it."""
    system, _, release, _, machine = os.uname()
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        libc = ""
    name, _, version = libc.partition(" ")
    if system != "Linux" or name != "glibc" or not version:
        import platform

        return platform.platform() or None
    return filename_safe("-".join(word.strip() for word in (system, release, machine, "with", name + version) if word))


def filename_safe(text: str) -> str:
    """What ``platform.platform()`` makes of its parts: blanks to ``_``, path and shell
    characters to ``-``, no ``unknown``, no ``--``, no trailing ``-``."""
    text = text.replace(" ", "_")
    for character in '/\\:;"()':
        text = text.replace(character, "-")
    text = text.replace("unknown", "")
    while "--" in text:
        text = text.replace("--", "-")
    return text.rstrip("-")


@functools.cache
def static_facts() -> dict:
    """Architecture, CPUs, memory, boot time, OS: read once."""
    uname = os.uname()
    facts: dict = {
        "cpu": uname.machine or None,
        "cpus": os.cpu_count(),
        "system": uname.sysname or None,
        "platform": platform_name(),
    }
    try:
        facts["memory_bytes"] = psutil.virtual_memory().total
        facts["boot_time"] = psutil.boot_time()
    except (OSError, RuntimeError) as error:
        log.debug("memory or boot time unknown: %s", error)
    return {name: value for name, value in facts.items() if value is not None}


_found_gpus: dict | None = None
"""GPUs once NVML named some: boards do not come and go while the agent runs, so NVML is asked no more."""


def gpu_facts() -> dict:
    """``gpus`` (boards NVML sees) and ``gpu_models`` (their names), once the GPU sensor has loaded NVML;
    else no GPUs: pynvml is never imported here, so an agent without the GPU sensor never loads it."""
    global _found_gpus
    if _found_gpus is not None:
        return _found_gpus
    nvml = sys.modules.get("pynvml")
    models: list[str] = []
    if nvml is not None:
        try:
            for index in range(int(nvml.nvmlDeviceGetCount())):
                name = nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(index))
                models.append(name.decode(errors="replace") if isinstance(name, bytes) else str(name))
        except Exception:  # not initialised, or no driver: the sensor reports why
            models = []
    facts = {"gpus": len(models), "gpu_models": models}
    if models:
        _found_gpus = facts
    return facts


def hello_facts(sensors: dict[str, float]) -> dict:
    """The hello's ``facts``; the sensor intervals are left out should they not fit the hello's size limit."""
    facts = {**static_facts(), **gpu_facts(), "sensors": sensors}
    if len(json.dumps(facts)) > protocol.MAX_HELLO // 2:
        log.warning("%d sensors: too many to list in the hello; lmaster will not show their intervals", len(sensors))
        del facts["sensors"]
    return facts
