"""Golden tests: recorded psutil output in, Graphite paths and values out.

Each folder ``testcases/<Sensor>/<case>/`` is one test (id ``Sensor/case``),
in the style of Telegraf's ``testcases/``; golden.py says what the files
hold and record.py makes new ones. The paths are a public interface
(dashboards and alerts are built on them), so any change shows up here as a
diff against a reviewed file.
"""

from __future__ import annotations

import difflib

import pytest
from golden import (
    CASES_DIR,
    CONF_FILE,
    EXPECTED_FILE,
    INPUT_FILE,
    NO_SAMPLE,
    UNSUPPORTED,
    Case,
    discover_cases,
    load_sensor,
    measure_recorded,
    plaintext_lines,
)

from fructosa.sensors import REGISTRY, SensorUnsupported

CASES = discover_cases()


def _param(case: Case) -> object:
    reason = case.xfail_reason()
    # Only the golden diff may fail: a broken sensor.conf or psutil.json still errors.
    marks = [pytest.mark.xfail(reason=reason, strict=True, raises=pytest.fail.Exception)] if reason else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_golden_case(case: Case) -> None:
    sensor = load_sensor(case.path / CONF_FILE, case.sensor)
    raw = case.read_input()
    expected = case.read_expected()

    if UNSUPPORTED in expected:
        assert expected == [UNSUPPORTED], f"{UNSUPPORTED!r} must be the only line of {EXPECTED_FILE}"
        with pytest.raises(SensorUnsupported):
            measure_recorded(sensor, raw)
        return

    value = measure_recorded(sensor, raw)
    if NO_SAMPLE in expected:
        assert expected == [NO_SAMPLE], f"{NO_SAMPLE!r} must be the only line of {EXPECTED_FILE}"
        assert value is None, f"nothing to send expected, the sensor sends {value!r}"
        return

    assert value is not None, f"the sensor sends nothing; {EXPECTED_FILE} expects a sample"
    actual = plaintext_lines(case.sensor, value)
    if actual != expected:
        diff = difflib.unified_diff(
            expected, actual, f"{case.id}/{EXPECTED_FILE}", "what the sensor sends", lineterm=""
        )
        pytest.fail(
            "\n".join(diff) + f"\n\nIf the change is intended, review it and run: "
            f"python tests/sensors/record.py {case.sensor} {case.name} --replay",
            pytrace=False,
        )


@pytest.mark.parametrize("sensor_name", ["CPUPercent", "CPUTimesPercent"], ids=lambda name: f"{name}/first")
def test_rates_send_nothing_on_their_first_reading(sensor_name: str) -> None:
    """The first reading after a start or reload only takes the reference: a case pins that down."""
    case = CASES_DIR / sensor_name / "first_reading_sends_nothing"
    assert (case / EXPECTED_FILE).read_text(encoding="utf-8").splitlines() == [NO_SAMPLE]


def test_every_registered_sensor_has_a_case() -> None:
    covered = {case.sensor for case in CASES}
    assert sorted(set(REGISTRY) - covered) == [], "sensors without a folder in tests/sensors/testcases"


def test_every_case_folder_is_complete_and_names_a_sensor() -> None:
    problems = [f"{path.name}: stray file" for path in CASES_DIR.iterdir() if not path.is_dir()]
    for case in CASES:
        if case.sensor not in REGISTRY:
            problems.append(f"{case.id}: no sensor {case.sensor} in fructosa.sensors.REGISTRY")
        problems += [
            f"{case.id}: no {name}"
            for name in (CONF_FILE, INPUT_FILE, EXPECTED_FILE)
            if not (case.path / name).is_file()
        ]
    assert problems == []


@pytest.mark.parametrize(
    "sensor_name", ["SensorsTemperatures", "SensorsFans", "CPUFreq"], ids=lambda name: f"{name}/unsupported"
)
def test_sensors_that_may_find_nothing_have_an_unsupported_case(sensor_name: str) -> None:
    """The agent idles these sensors on SensorUnsupported; a case pins that down."""
    case = CASES_DIR / sensor_name / "unsupported"
    assert (case / EXPECTED_FILE).read_text(encoding="utf-8").splitlines() == [UNSUPPORTED]
