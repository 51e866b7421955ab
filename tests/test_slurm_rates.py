"""SlurmJobs' per-process rates: since the previous read, or since the process started when it is new."""

from __future__ import annotations

import pytest

from fructosa.sensors.slurm import NEWBORN_AGE, _rate

NOW = 1_000_000.0


class FakeProcess:
    """What ``_rate`` asks of a psutil process: when it started."""

    def __init__(self, started: float) -> None:
        self.started = started

    def create_time(self) -> float:
        return self.started


@pytest.mark.timeout(10)
def test_rate_since_previous_read() -> None:
    assert _rate(7.0, 2.0, 10.0, NOW, FakeProcess(NOW - 100), 100.0) == pytest.approx(50.0)


@pytest.mark.timeout(10)
def test_counter_going_back_reads_zero_not_negative() -> None:
    assert _rate(1.0, 2.0, 10.0, NOW, FakeProcess(NOW - 100), 100.0) == 0.0


@pytest.mark.timeout(10)
def test_new_process_rated_since_its_start() -> None:
    assert _rate(2.0, None, 10.0, NOW, FakeProcess(NOW - 4.0), 100.0) == pytest.approx(50.0)


@pytest.mark.timeout(10)
def test_new_process_older_than_the_interval_rated_over_the_interval() -> None:
    assert _rate(5.0, None, 10.0, NOW, FakeProcess(NOW - 60.0), 100.0) == pytest.approx(50.0)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("age", [0.0, 0.005, NEWBORN_AGE / 2, -0.01])
def test_newborn_process_has_no_rate_yet(age: float) -> None:
    # a busy loop a few clock ticks old has 0 ticks of CPU counted: it must not read as an idle 0 %
    assert _rate(0.0, None, 10.0, NOW, FakeProcess(NOW - age), 100.0) is None


@pytest.mark.timeout(10)
def test_no_rate_before_any_previous_read() -> None:
    assert _rate(5.0, None, None, NOW, FakeProcess(NOW - 60.0), 100.0) is None
