"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, the ``gpu`` extra).

``read()`` asks NVML for every field of every GPU and returns plain data (a
field the GPU does not have is simply absent); ``shape()`` turns that into
paths without touching NVML, so recorded outputs of real nodes are the golden
tests. NVML is imported and initialised on the first read, never at import:
an agent without the package, without ``libnvidia-ml`` or without GPUs says
so once and idles the sensor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .base import Option, Sensor, SensorUnsupported, register
from .processes import job_number, job_of

INSTALL_HINT = "pip install nvidia-ml-py (FrUCToSA's gpu extra: pip install '.[gpu]')"
ABSENT_ERRORS = ("NotSupported", "NotFound", "NoPermission", "FunctionNotFound")
"""NVML errors meaning "this GPU (or driver, or user) has no such value":
the field is left out. Any other NVML error of one field is counted in
``errors`` and the rest of the GPU is still reported."""
UNAVAILABLE_ERRORS = ("LibraryNotFound", "DriverNotLoaded", "NoPermission", "LibRmVersionMismatch")
"""nvmlInit errors meaning the host cannot provide GPU data at all."""

_init_lock = threading.Lock()
_nvml: ModuleType | None = None


def _load_nvml() -> ModuleType:
    """pynvml, initialised once per process (NVML counts its own inits)."""
    global _nvml
    with _init_lock:
        if _nvml is not None:
            return _nvml
        try:
            import pynvml
        except ImportError:
            raise SensorUnsupported(f"the NVML Python bindings are not installed: {INSTALL_HINT}") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            if _error_name(error) in UNAVAILABLE_ERRORS:
                raise SensorUnsupported(f"NVML cannot start: {error}") from None
            raise
        _nvml = pynvml
        return pynvml


def _error_name(error: Exception) -> str:
    """``NotSupported`` for pynvml's ``NVMLError_NotSupported``."""
    return type(error).__name__.removeprefix("NVMLError_")


def _text(value: bytes | str) -> str:
    """NVML strings: bytes in older bindings, str in newer ones."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def pci_address(bus_id: str) -> str:
    """NVML's ``00000000:18:00.0`` as ``lspci`` writes it: ``0000:18:00.0``."""
    domain, colon, rest = bus_id.strip().lower().partition(":")
    try:
        return f"{int(domain, 16):04x}:{rest}" if colon else bus_id
    except ValueError:
        return bus_id


class _Reader:
    """One pass over NVML: each call's value, or its absence or failure."""

    def __init__(self, nvml: ModuleType) -> None:
        self.nvml = nvml
        self.absent = tuple(
            getattr(nvml, f"NVMLError_{name}") for name in ABSENT_ERRORS if hasattr(nvml, f"NVMLError_{name}")
        )

    def get(self, errors: dict[str, str], field: str, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)``; None when NVML says the value does not exist, and
        None plus an entry in ``errors`` when it fails otherwise."""
        try:
            return call(*args)
        except self.absent:
            return None
        except self.nvml.NVMLError as error:
            errors[field] = str(error)
            return None

    def memory(self, errors: dict[str, str], field: str, handle: Any) -> dict | None:
        info = self.get(errors, field, self.nvml.nvmlDeviceGetMemoryInfo, handle)
        return None if info is None else {"total": info.total, "used": info.used, "free": info.free}

    def processes(self, errors: dict[str, str], handle: Any) -> list[dict] | None:
        """Compute and graphics processes on ``handle``, each pid once."""
        found: dict[int, int | None] = {}
        answered = False
        for field, call in (
            ("compute_processes", self.nvml.nvmlDeviceGetComputeRunningProcesses),
            ("graphics_processes", self.nvml.nvmlDeviceGetGraphicsRunningProcesses),
        ):
            listed = self.get(errors, field, call, handle)
            if listed is None:
                continue
            answered = True
            for process in listed:
                if found.get(process.pid) is None:
                    found[process.pid] = process.usedGpuMemory
        if not answered:
            return None
        return [{"pid": pid, "used_memory": used} for pid, used in sorted(found.items())]


def _drop_none(record: dict) -> dict:
    return {key: value for key, value in record.items() if value is not None}


@register
class GPU(Sensor):
    """NVIDIA GPUs via NVML (needs the ``gpu`` extra, ``pip install
    nvidia-ml-py``, and the NVIDIA driver's libnvidia-ml). Per GPU, under
    ``HOST.GPU.ID.`` where ID is the GPU's PCI address (``0000_18_00_0``,
    ``name_by = bus_id``: the path stays with the slot when another GPU
    fails or is removed), ``gpuN`` (``index``) or its UUID (``uuid``: stays
    with the board):

    * ``index`` (NVML's index, as nvidia-smi and CUDA number them),
      ``utilization.gpu`` and ``.memory`` (%), ``memory.total``, ``.used``,
      ``.free`` (bytes) and ``.percent``, ``temperature`` (°C),
      ``power.draw`` and ``.limit`` (W), ``clocks.sm`` and ``.memory`` (MHz),
      ``fan`` (%), ``ecc.volatile.corrected``, ``.uncorrected`` and the same
      for ``ecc.aggregate`` (counts);
    * ``mig.enabled`` (1/0) and, in MIG mode, ``mig.devices`` and
      ``mig.N.memory.used``/``.total`` per MIG device;
    * ``processes.count`` and ``processes.memory`` (bytes), and the Slurm jobs
      using the GPU, most memory first, in at most ``max_jobs`` slots:
      ``jobs.N.job_id``, ``jobs.N.memory``, ``jobs.N.processes``; processes
      outside any job are summed in ``no_job.memory`` and ``no_job.processes``;
    * ``errors``: fields NVML failed to read this time (not counting fields
      the GPU does not have).

    A field the GPU does not support (fans on passively cooled boards, ECC
    on consumer cards, utilisation in MIG mode) is left out, not zero. Job
    ids are values in numbered slots, not path components, so the number of
    series stays fixed however many jobs a node runs over the weeks.
    Without the package, the driver library or any GPU, the sensor says so
    once and idles."""

    description = "NVIDIA GPUs via NVML: utilisation, memory, power, clocks, ECC, memory per Slurm job"
    default_interval = 10.0
    options = (
        Option(
            "name_by",
            str,
            "bus_id",
            "how each GPU is named in paths: its PCI address, NVML index (gpuN) or UUID",
            choices=("bus_id", "index", "uuid"),
        ),
        Option("max_jobs", int, 4, "at most this many Slurm jobs per GPU (slots jobs.1 …)"),
    )

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        self._identities: dict[int, dict[str, str]] = {}

    def read(self) -> dict:
        nvml = _load_nvml()
        reader = _Reader(nvml)
        gpus = [self._read_gpu(reader, index) for index in range(nvml.nvmlDeviceGetCount())]
        return {"gpus": gpus}

    def _read_gpu(self, reader: _Reader, index: int) -> dict:
        nvml = reader.nvml
        errors: dict[str, str] = {}
        handle = reader.get(errors, "handle", nvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:  # a lost GPU: keep its last known name, so its path stays
            return {"index": index, **self._identities.get(index, {}), "errors": errors or {"handle": "no handle"}}
        identity = {}
        uuid = reader.get(errors, "uuid", nvml.nvmlDeviceGetUUID, handle)
        if uuid is not None:
            identity["uuid"] = _text(uuid)
        pci = reader.get(errors, "pci", nvml.nvmlDeviceGetPciInfo, handle)
        if pci is not None:
            identity["bus_id"] = pci_address(_text(pci.busId))
        name = reader.get(errors, "name", nvml.nvmlDeviceGetName, handle)
        if name is not None:
            identity["name"] = _text(name)
        self._identities[index] = identity

        record: dict[str, Any] = {"index": index, **identity}
        utilization = reader.get(errors, "utilization", nvml.nvmlDeviceGetUtilizationRates, handle)
        if utilization is not None:
            record["utilization"] = {"gpu": utilization.gpu, "memory": utilization.memory}
        record["memory"] = reader.memory(errors, "memory", handle)
        record["temperature"] = reader.get(
            errors, "temperature", nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU
        )
        record["power_draw_mw"] = reader.get(errors, "power_draw", nvml.nvmlDeviceGetPowerUsage, handle)
        record["power_limit_mw"] = reader.get(errors, "power_limit", nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        clocks = {
            clock: reader.get(errors, f"clock_{clock}", nvml.nvmlDeviceGetClockInfo, handle, kind)
            for clock, kind in (("sm", nvml.NVML_CLOCK_SM), ("memory", nvml.NVML_CLOCK_MEM))
        }
        record["clocks"] = _drop_none(clocks) or None
        record["fan"] = reader.get(errors, "fan", nvml.nvmlDeviceGetFanSpeed, handle)
        ecc = {}
        for counter, counter_type in (("volatile", nvml.NVML_VOLATILE_ECC), ("aggregate", nvml.NVML_AGGREGATE_ECC)):
            counts = {
                kind: reader.get(
                    errors, f"ecc_{counter}_{kind}", nvml.nvmlDeviceGetTotalEccErrors, handle, error, counter_type
                )
                for kind, error in (
                    ("corrected", nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
                    ("uncorrected", nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
                )
            }
            if _drop_none(counts):
                ecc[counter] = _drop_none(counts)
        record["ecc"] = ecc or None

        mig_mode = reader.get(errors, "mig_mode", nvml.nvmlDeviceGetMigMode, handle)
        processes = None
        if mig_mode is not None:
            record["mig"] = {"current": mig_mode[0], "pending": mig_mode[1]}
            if mig_mode[0] == nvml.NVML_DEVICE_MIG_ENABLE:
                record["mig"]["devices"], processes = self._read_mig(reader, errors, handle)
        if processes is None:
            processes = reader.processes(errors, handle)
        if processes is not None:
            for process in processes:
                process["job"] = job_of(process["pid"])
            record["processes"] = processes
        record["errors"] = errors
        return _drop_none(record)

    def _read_mig(self, reader: _Reader, errors: dict[str, str], handle: Any) -> tuple[list[dict], list[dict] | None]:
        """MIG devices' memory, and the processes of all of them together."""
        nvml = reader.nvml
        devices, processes, answered = [], [], False
        count = reader.get(errors, "mig_count", nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
        for slot in range(count):
            mig_handle = reader.get(errors, f"mig_{slot}", nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot)
            if mig_handle is None:  # NotFound: no MIG device in this slot
                continue
            devices.append(
                _drop_none({"index": slot, "memory": reader.memory(errors, f"mig_{slot}_memory", mig_handle)})
            )
            listed = reader.processes(errors, mig_handle)
            if listed is not None:
                answered = True
                processes += listed
        return devices, processes if answered else None

    def shape(self, raw: dict) -> dict:
        gpus = raw.get("gpus") or []
        if not gpus:
            raise SensorUnsupported("NVML sees no GPUs on this host")
        return {self._key(gpu): shape_gpu(gpu, self.settings["max_jobs"]) for gpu in gpus}

    def _key(self, gpu: dict) -> str:
        """The GPU's path component: its bus id or UUID, else ``gpuN``."""
        name_by = self.settings["name_by"]
        if name_by != "index" and gpu.get(name_by):
            return gpu[name_by]
        return f"gpu{gpu['index']}"


def _percent(part: float | None, whole: float | None) -> float | None:
    return round(100.0 * part / whole, 2) if part is not None and whole else None


def _watts(milliwatts: float | None) -> float | None:
    return None if milliwatts is None else milliwatts / 1000.0


def shape_gpu(gpu: dict, max_jobs: int) -> dict:
    """One GPU's values from its NVML record (pure: golden-tested)."""
    memory = gpu.get("memory")
    shaped: dict[str, Any] = {"index": gpu.get("index"), "errors": len(gpu.get("errors") or {})}
    if "utilization" in gpu:
        shaped["utilization"] = gpu["utilization"]
    if memory:
        shaped["memory"] = {**memory, "percent": _percent(memory.get("used"), memory.get("total"))}
    for field in ("temperature", "clocks", "fan", "ecc"):
        if field in gpu:
            shaped[field] = gpu[field]
    power = {"draw": _watts(gpu.get("power_draw_mw")), "limit": _watts(gpu.get("power_limit_mw"))}
    if _drop_none(power):
        shaped["power"] = _drop_none(power)
    if "mig" in gpu:
        mig = gpu["mig"]
        shaped["mig"] = {"enabled": mig.get("current") == 1}
        if "devices" in mig:
            shaped["mig"]["devices"] = len(mig["devices"])
            for device in mig["devices"]:
                device_memory = device.get("memory") or {}
                shaped["mig"][device["index"]] = {
                    "memory": {"used": device_memory.get("used"), "total": device_memory.get("total")}
                }
    if "processes" in gpu:
        shaped.update(_by_job(gpu["processes"], max_jobs))
    return shaped


def _by_job(processes: list[dict], max_jobs: int) -> dict:
    """GPU processes summed per Slurm job, biggest first, in ``max_jobs`` slots."""
    jobs: dict[int, dict[str, int]] = {}
    outside = {"memory": 0, "processes": 0}
    for process in processes:
        job = job_number(process.get("job"))
        totals = outside if job is None else jobs.setdefault(job, {"memory": 0, "processes": 0})
        totals["memory"] += process.get("used_memory") or 0
        totals["processes"] += 1
    ranked = sorted(jobs.items(), key=lambda item: (-item[1]["memory"], item[0]))[:max_jobs]
    shaped: dict[str, Any] = {
        "processes": {
            "count": len(processes),
            "memory": sum(process.get("used_memory") or 0 for process in processes),
        },
        "jobs": {slot: {"job_id": job, **totals} for slot, (job, totals) in enumerate(ranked, start=1)},
    }
    if outside["processes"]:
        shaped["no_job"] = outside
    return shaped
