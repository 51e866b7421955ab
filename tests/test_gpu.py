"""The GPU sensor: the real NVML path where a GPU is present, the real
"no NVML" path where none is (this CI machine has no libnvidia-ml), how NVML
errors of single fields are handled, and ``shape`` on arbitrary partial
records. Recorded outputs of real nodes (8×H100, a GeForce, an A100 in MIG
mode with a lost GPU) are golden cases in tests/sensors/testcases/GPU/.
"""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fructosa.graphite_paths import is_valid_path, sample_to_datapoints
from fructosa.programs import agent_main
from fructosa.sensors import SensorUnsupported
from fructosa.sensors.gpu import GPU, _Reader, pci_address, shape_gpu


def nvml_gpu_count() -> tuple[int, str]:
    """(GPUs NVML sees here, why none) with the real bindings and library."""
    if importlib.util.find_spec("pynvml") is None:
        return 0, "nvidia-ml-py is not installed"
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return 0, f"NVML cannot start here: {error}"
    try:
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    return count, "NVML sees no GPU here"


GPUS, NO_GPU_REASON = nvml_gpu_count()
needs_gpu = pytest.mark.skipif(GPUS == 0, reason=f"needs an NVIDIA GPU: {NO_GPU_REASON}")
needs_no_gpu = pytest.mark.skipif(GPUS > 0, reason="this host has GPUs; the no-GPU path is not reachable")


def flatten(value: object) -> dict[str, float]:
    sample = {"host": "node01", "sensor": "GPU", "time": 1_700_000_000, "value": value}
    return {path: number for path, (_, number) in sample_to_datapoints(sample)}


# -- the real NVML path ----------------------------------------------------------------


@needs_gpu
def test_real_gpus_report_their_values() -> None:
    sensor = GPU({"name_by": "index"})
    raw = sensor.read()
    assert len(raw["gpus"]) == GPUS
    values = sensor.shape(raw)
    assert sorted(values) == sorted(f"gpu{index}" for index in range(GPUS))
    for key, gpu in values.items():
        assert gpu["errors"] == 0, f"{key}: NVML failed on {raw['gpus'][gpu['index']]['errors']}"
        memory = gpu["memory"]
        assert memory["total"] > 2**30 and 0 <= memory["used"] <= memory["total"]
        assert 0 <= gpu.get("temperature", 50) < 120
        assert 0 < gpu.get("power", {}).get("limit", 1) < 2000
        assert all(0 <= percent <= 100 for percent in gpu.get("utilization", {}).values())
        assert gpu["processes"]["count"] >= 0
    paths = flatten(values)
    assert all(is_valid_path(path) for path in paths) and "node01.GPU.gpu0.memory.total" in paths
    by_bus = GPU().shape(GPU().read())
    assert all(len(key.split(":")) == 3 for key in by_bus)  # 0000:18:00.0, a PCI address


# -- no NVML here: said once, sensor idles ------------------------------------------------


@needs_no_gpu
def test_without_nvml_the_sensor_is_unsupported() -> None:
    with pytest.raises(SensorUnsupported) as unsupported:
        GPU().measure()
    if importlib.util.find_spec("pynvml") is None:
        assert "pip install nvidia-ml-py" in str(unsupported.value)
    else:  # the bindings load, the driver library does not: libnvidia-ml.so.1 is absent
        assert str(unsupported.value) == "NVML cannot start: NVML Shared Library Not Found"


def test_without_the_bindings_the_sensor_says_how_to_install_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # what Python does for an absent package
    monkeypatch.setattr("fructosa.sensors.gpu._nvml", None)
    with pytest.raises(SensorUnsupported, match="not installed: pip install nvidia-ml-py"):
        GPU().read()


@needs_no_gpu
def test_lagent_sensors_gpu_explains_the_sensor(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_main(["sensors", "GPU"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("GPU: NVIDIA GPUs via NVML")
    assert "name_by (str, default bus_id, one of bus_id, index, uuid)" in out
    assert "max_jobs (int, default 4)" in out
    assert "[sensor:GPU]\ntime_interval = 10\nname_by = bus_id\nmax_jobs = 4" in out
    assert "not supported (NVML cannot start" in out or "not supported (the NVML Python bindings" in out


# -- one field's NVML error does not fail the GPU ------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("pynvml") is None, reason="nvidia-ml-py is not installed")
def test_unsupported_fields_are_left_out_and_failures_counted() -> None:
    import pynvml

    reader = _Reader(pynvml)

    def fails(code: int):  # noqa: ANN202
        def call() -> int:
            raise pynvml.NVMLError(code)

        return call

    errors: dict[str, str] = {}
    assert reader.get(errors, "fan", fails(pynvml.NVML_ERROR_NOT_SUPPORTED)) is None
    assert reader.get(errors, "pid", fails(pynvml.NVML_ERROR_NO_PERMISSION)) is None
    assert errors == {}
    assert reader.get(errors, "power_draw", fails(pynvml.NVML_ERROR_GPU_IS_LOST)) is None
    assert errors == {"power_draw": "GPU is lost"}
    assert reader.get(errors, "temperature", lambda: 61) == 61
    with pytest.raises(ZeroDivisionError):  # a bug is not an NVML answer
        reader.get(errors, "x", lambda: 1 / 0)


def test_pci_addresses_are_written_as_lspci_does() -> None:
    assert pci_address("00000000:18:00.0") == "0000:18:00.0"
    assert pci_address("00000001:AB:00.0") == "0001:ab:00.0"
    assert pci_address("weird") == "weird"


def test_no_gpus_is_unsupported_and_name_by_falls_back_to_the_index() -> None:
    with pytest.raises(SensorUnsupported, match="no GPUs"):
        GPU().shape({"gpus": []})
    lost = {"index": 3, "errors": {"handle": "GPU is lost"}}  # never seen before it was lost
    assert flatten(GPU().shape({"gpus": [lost]})) == {"node01.GPU.gpu3.errors": 1, "node01.GPU.gpu3.index": 3}


# -- shape on whatever NVML leaves out ------------------------------------------------------

numbers = st.integers(min_value=0, max_value=2**40)
memory = st.fixed_dictionaries({"total": numbers, "used": numbers, "free": numbers})
process = st.fixed_dictionaries(
    {
        "pid": st.integers(1, 2**22),
        "used_memory": st.none() | numbers,
        "job": st.none() | st.integers(1, 10**7) | st.text(max_size=8),
    }
)
gpu_record = st.fixed_dictionaries(
    {"index": st.integers(0, 15)},
    optional={
        "bus_id": st.sampled_from(["0000:18:00.0", "0000:2a:00.0"]),
        "uuid": st.text(min_size=1, max_size=40),
        "utilization": st.fixed_dictionaries({"gpu": st.integers(0, 100), "memory": st.integers(0, 100)}),
        "memory": memory,
        "temperature": st.integers(0, 120),
        "power_draw_mw": numbers,
        "power_limit_mw": numbers,
        "clocks": st.dictionaries(st.sampled_from(["sm", "memory"]), st.integers(0, 5000)),
        "fan": st.integers(0, 100),
        "mig": st.fixed_dictionaries(
            {"current": st.integers(0, 1), "pending": st.integers(0, 1)},
            optional={
                "devices": st.lists(
                    st.fixed_dictionaries({"index": st.integers(0, 6)}, optional={"memory": memory}), max_size=7
                )
            },  # noqa: E501
        ),
        "processes": st.lists(process, max_size=20),
        "errors": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
    },
)


@settings(max_examples=200, deadline=None)
@given(gpu_record, st.integers(1, 8))
def test_shape_accepts_any_partial_record(gpu: dict, max_jobs: int) -> None:
    shaped = shape_gpu(gpu, max_jobs)
    paths = flatten({"g": shaped})
    assert all(is_valid_path(path) and math.isfinite(value) for path, value in paths.items())
    assert paths["node01.GPU.g.index"] == gpu["index"]
    jobs = shaped.get("jobs", {})
    assert len(jobs) <= max_jobs and list(jobs) == list(range(1, len(jobs) + 1))
    memories = [slot["memory"] for slot in jobs.values()]
    assert memories == sorted(memories, reverse=True)
    if "processes" in gpu:
        in_slots = sum(slot["processes"] for slot in jobs.values()) + shaped.get("no_job", {}).get("processes", 0)
        assert in_slots <= shaped["processes"]["count"] == len(gpu["processes"])
    assert ("utilization" in shaped) == ("utilization" in gpu)  # left out, never made up
