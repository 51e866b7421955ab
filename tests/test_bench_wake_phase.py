"""The agent benchmark's wake-phase arithmetic (benchmarks/wake_phase.py) and the
choice of the program to restart when two wake too near each other
(benchmarks/side_by_side.py): pure functions, no process started."""

from __future__ import annotations

import math

import pytest

from benchmarks import side_by_side, wake_phase

pytestmark = pytest.mark.timeout(60)


def test_circular_distance_goes_the_short_way_round():
    assert wake_phase.circular_distance(0.95, 0.05) == pytest.approx(0.1)
    assert wake_phase.circular_distance(0.05, 0.95) == pytest.approx(0.1)
    assert wake_phase.circular_distance(0.2, 0.7) == pytest.approx(0.5)
    assert wake_phase.circular_distance(0.3, 0.3) == 0.0


@pytest.mark.parametrize("after", [100.0, 100.2, 100.7, 100.9999, 12345.5])
@pytest.mark.parametrize("phase", [0.0, 0.25, 0.8])
def test_next_instant_at_is_the_first_instant_of_that_phase(after, phase):
    instant = wake_phase.next_instant_at(phase, after)
    assert after <= instant < after + 1.0
    assert wake_phase.circular_distance(instant % 1.0, phase) < 1e-9


def test_a_burst_across_the_second_boundary_has_its_phase_at_the_boundary():
    """Bursts at .98 and .02 of every second average to 0, not to 0.5 (a circular mean)."""
    points = [(second + part, 1000) for second in range(5) for part in (0.98, 1.02)]
    found = wake_phase.summarise(points)
    assert wake_phase.circular_distance(found.phase, 0.0) < 1e-6
    assert found.near_share == 1.0 and found.cpu_ns == 10_000


def test_a_second_burst_lowers_the_near_share():
    points = [(second + 0.3, 900) for second in range(4)] + [(second + 0.8, 100) for second in range(4)]
    found = wake_phase.summarise(points)
    assert wake_phase.circular_distance(found.phase, 0.3) < 0.06
    assert found.near_share == pytest.approx(0.9)


def test_no_cpu_seen_gives_no_phase():
    found = wake_phase.summarise([])
    assert math.isnan(found.phase) and found.cpu_ns == 0


def test_the_closest_pair_is_found_across_the_boundary():
    phases = {name: wake_phase.WakePhase(phase, 1.0, 1) for name, phase in
              (("lagent", 0.97), ("loop", 0.5), ("collectd", 0.04))}  # fmt: skip
    apart, first, second = wake_phase.closest_pair(phases)
    assert apart == pytest.approx(0.07) and {first, second} == {"lagent", "collectd"}


def test_slots_are_a_third_of_a_second_apart_and_rotate():
    first = side_by_side.slots(3, 0)
    gaps = sorted(wake_phase.circular_distance(a, b) for i, a in enumerate(first) for b in first[i + 1 :])
    assert gaps == pytest.approx([1 / 3] * 3, abs=1e-9)
    turned = side_by_side.slots(3, 1)
    assert wake_phase.circular_distance(turned[0], first[1]) < 0.05  # the same slots, one along (less a clock step)


def contender(label: str, delay: float | None) -> side_by_side.Contender:
    def never(tag: str, phase: float | None):
        raise AssertionError("not started in this test")

    return side_by_side.Contender(label, never, None, delay)


def test_the_program_given_its_phase_is_never_the_one_restarted():
    contenders = [contender("lagent", 0.25), contender("loop", None), contender("collectd", 0.015)]
    phases = {"lagent": wake_phase.WakePhase(0.52, 1.0, 1), "loop": wake_phase.WakePhase(0.5, 1.0, 1),
              "collectd": wake_phase.WakePhase(0.83, 1.0, 1)}  # fmt: skip
    targets = {"lagent": 0.17, "loop": 0.5, "collectd": 0.83}
    assert side_by_side.misplaced(contenders, phases, targets, ("lagent", "loop")) == "lagent"


def test_of_two_programs_that_take_a_delay_the_one_further_from_its_slot_is_restarted():
    contenders = [contender("lagent", 0.25), contender("loop", None), contender("collectd", 0.015)]
    phases = {"lagent": wake_phase.WakePhase(0.20, 1.0, 1), "loop": wake_phase.WakePhase(0.5, 1.0, 1),
              "collectd": wake_phase.WakePhase(0.26, 1.0, 1)}  # fmt: skip
    targets = {"lagent": 0.17, "loop": 0.5, "collectd": 0.83}
    assert side_by_side.misplaced(contenders, phases, targets, ("lagent", "collectd")) == "collectd"


def test_the_launch_delay_is_learnt_from_where_the_program_ticked():
    program = contender("lagent", 0.25)
    program.launched_at = 1000.6
    program.learn(0.9)
    assert program.delay == pytest.approx(0.3)
    program.learn(math.nan)
    assert program.delay == pytest.approx(0.3)


def test_ratios_are_the_median_of_the_rounds():
    def record(ours: float, loop: float) -> dict:
        return {"agents": {"lagent": {"cpu_percent_schedstat": ours, "cpu_percent": ours, "rss_mb": 20.0},
                           "loop": {"cpu_percent_schedstat": loop, "cpu_percent": loop, "rss_mb": 13.0}}}  # fmt: skip

    summary = side_by_side.ratio_summary([record(0.18, 0.12), record(0.30, 0.10), record(0.14, 0.10)], "lagent", "loop")
    assert summary["cpu_rounds"] == pytest.approx([1.5, 3.0, 1.4])
    assert summary["cpu"] == pytest.approx(1.5)
