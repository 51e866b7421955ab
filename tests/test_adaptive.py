"""Adaptive sampling: condition parsing, the fast/slow schedule, and a real CPU
burner speeding up a real lagent's CPUPercent in whisper."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fructosa.adaptive import (
    OPERATORS,
    AdaptivePlan,
    AdaptiveSchedule,
    Clause,
    Condition,
    FastSampling,
    next_due,
    parse_condition,
    parse_fast,
)
from fructosa.config import ConfigError, load_agent_config
from fructosa.graphite_paths import short_hostname
from fructosa.sensors import REGISTRY
from tests.support.carbon import CarbonCache, free_ports
from tests.support.daemons import Daemon, seed_configs
from tests.support.journal import complete_lines

HOST = short_hostname(__import__("socket").gethostname())
SENSORS = sorted(REGISTRY)

# -- parsing ---------------------------------------------------------------

components = st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True)
thresholds = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    clauses = draw(
        st.lists(
            st.builds(
                Clause,
                metric=st.builds(
                    lambda s, parts: ".".join([s, *parts]),
                    st.sampled_from(SENSORS),
                    st.lists(components, min_size=1, max_size=3),
                ),
                op=st.sampled_from(sorted(OPERATORS)),
                threshold=thresholds,
            ),
            min_size=1,
            max_size=4,
        )
    )
    joiner = draw(st.sampled_from(["and", "or"])) if len(clauses) > 1 else "and"  # one clause: no joiner
    return Condition(tuple(clauses), joiner)


@given(conditions())
def test_condition_text_round_trips(condition: Condition) -> None:
    assert parse_condition(str(condition), SENSORS) == condition


@given(conditions(), st.dictionaries(st.text(max_size=3), thresholds))
def test_condition_evaluation_matches_its_clauses(condition: Condition, noise: dict[str, float]) -> None:
    latest = {**noise, **{clause.metric: clause.threshold for clause in condition.clauses[::2]}}
    holds, reason = condition.evaluate(latest)
    each = [clause.metric in latest and clause.holds(latest[clause.metric]) for clause in condition.clauses]
    assert holds == (all(each) if condition.joiner == "and" else any(each))
    assert reason  # always says why


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Nope.total > 80", "unknown sensor 'Nope'"),
        ("CPUPercent.total => 80", "unknown operator '=>'"),
        ("CPUPercent.total > eighty", "'eighty' is not a number"),
        ("CPUPercent.total > nan", "not a finite number"),
        ("CPUPercent > 80", "not a metric path"),
        ("CPUPercent.total", "is not 'Sensor.metric OP number'"),
        ("CPUPercent.total > 1 and CPUPercent.0 > 2 or CPUPercent.1 > 3", "mixing 'and' with 'or'"),
        ("", "empty condition"),
    ],
)
def test_bad_conditions_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_condition(text, SENSORS)


def test_fast_options_are_checked_together() -> None:
    when = parse_condition("CPUPercent.total > 80", SENSORS)
    assert parse_fast(60, None, None, None) is None
    assert parse_fast(60, 5, when, None) == FastSampling(5, when, 180)  # hold: 3 slow intervals
    for interval, cond, hold, message in [
        (60, when, None, "must be below time_interval"),
        (5, None, None, "'fast time_interval' needs 'fast when'"),
        (None, when, None, "'fast when' needs 'fast time_interval'"),
        (None, None, 10, "'fast hold' needs"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_fast(60, interval, cond, hold)


def _agent_file(tmp_path: Path, section: str) -> Path:
    path = tmp_path / "lagent.conf"
    path.write_text(f"[lmaster]\nhost = localhost\n\n[sensor:CPUPercent]\ntotal = yes\n{section}\n")
    return path


def test_config_file_errors_name_file_section_key_and_value(tmp_path: Path) -> None:
    good = load_agent_config(str(_agent_file(tmp_path, "time_interval = 20\nfast time_interval = 2\n"
                                                       "fast when = CPUPercent.total >= 50\n")))  # fmt: skip
    (sensor,) = good.sensors
    assert sensor.fast == FastSampling(2, parse_condition("CPUPercent.total >= 50", SENSORS), 60)
    for section, key, value in [
        ("fast time_interval = 2\nfast when = CPUPercent.total ! 5", "fast when", "CPUPercent.total ! 5"),
        ("time_interval = 2\nfast time_interval = 3\nfast when = CPUPercent.0 > 5", "fast time_interval", "3"),
        ("fast when = CPUPercent.0 > 5", "fast when", "CPUPercent.0 > 5"),
    ]:
        with pytest.raises(ConfigError) as error:
            load_agent_config(str(_agent_file(tmp_path, section)))
        text = str(error.value)
        assert "\n" not in text
        assert text.startswith(f"{tmp_path / 'lagent.conf'}: [sensor:CPUPercent] {key} = {value!r}: "), text


# -- the schedule ----------------------------------------------------------


def test_schedule_goes_fast_at_once_and_slow_only_after_the_hold() -> None:
    when = parse_condition("CPUPercent.total > 80", SENSORS)
    schedule = AdaptiveSchedule(60, FastSampling(5, when, 30))
    assert schedule.interval == 60
    assert schedule.observe(True, now=100) and schedule.interval == 5
    assert not schedule.observe(True, now=105)
    assert not schedule.observe(False, now=110)  # 5 s after it last held: still fast
    assert not schedule.observe(False, now=134.9) and schedule.interval == 5
    assert schedule.observe(False, now=135) and schedule.interval == 60
    assert not schedule.observe(False, now=200)


@given(
    st.lists(st.tuples(st.booleans(), st.floats(0, 10)), max_size=30),
    st.floats(0.1, 20),
)
def test_schedule_is_fast_exactly_within_hold_of_the_last_true(steps: list[tuple[bool, float]], hold: float) -> None:
    schedule = AdaptiveSchedule(60, FastSampling(1, parse_condition("CPUPercent.0 > 1", SENSORS), hold))
    now, last_true = 0.0, None
    for holds, step in steps:
        now += step
        last_true = now if holds else last_true
        schedule.observe(holds, now)
        assert schedule.is_fast == (last_true is not None and now - last_true < hold)


@given(st.floats(-1e6, 1e6), st.sampled_from([0.5, 1.0, 2.0, 60.0]), st.floats(0, 1e6))
def test_next_due_is_the_next_grid_point(origin: float, interval: float, offset: float) -> None:
    now = origin + offset
    due = next_due(origin, interval, now)
    assert now < due <= now + interval + 1e-6
    k = (due - origin) / interval
    assert abs(k - round(k)) < 1e-6


# -- end to end: a real burner drives the schedule --------------------------

SLOW, FAST, HOLD = 3, 1, 2
THRESHOLD = 90  # two burners saturate both CPUs; other tests on the box rarely do


def _from(carbon: CarbonCache, path: str, since: int, count: int, timeout: float) -> list[tuple[int, float]]:
    """The first ``count`` points at or after ``since`` (which may lie in the future)."""
    now = int(time.time())
    series = carbon.wait_for(path, lambda s: len([p for p in s if p[0] >= since]) >= count,
                             since=min(since, now), timeout=timeout)  # fmt: skip
    return [p for p in series if p[0] >= since][:count]


def _journaled(journal: Path, path: str, since: int) -> list[float]:
    """The agent's own timestamps of ``path`` at or after ``since``, from its journal."""
    lines = [line.split() for line in complete_lines(journal)]
    return sorted(float(fields[2]) for fields in lines if len(fields) == 3 and fields[0] == path
                  and float(fields[2]) >= since)  # fmt: skip


def _slow_again(carbon: CarbonCache, path: str, since: int, when: str) -> list[tuple[int, float]]:
    """The points from ``since`` once a SLOW gap shows among them: the agent is back to slow sampling.

    Only a calm machine lets it: a busy other test keeps CPUPercent.total over THRESHOLD, and so the agent
    fast, for as long as it likes. After 90 s, calm samples (at or under THRESHOLD) spanning the hold and a
    slow interval that did not bring it back fail the test; a machine never calm that long skips it, saying so.
    """

    def from_since(series: list[tuple[int, float]]) -> list[tuple[int, float]]:
        return [point for point in series if point[0] >= since]

    now = int(time.time())  # ``since`` may lie ahead: whisper reads no range starting in the future
    try:
        return from_since(carbon.wait_for(path, lambda s: SLOW in _gaps(from_since(s)), since=min(since, now),
                                          timeout=90))  # fmt: skip
    except AssertionError:
        longest, calm_from = 0, None
        for stamp, value in from_since(carbon.series(path, since=min(since, now))):
            calm_from = (stamp if calm_from is None else calm_from) if value <= THRESHOLD else None
            longest = max(longest, stamp - calm_from if calm_from is not None else 0)
        if longest < HOLD + SLOW:
            pytest.skip(f"the shared machine stayed over {THRESHOLD} % CPU {when}: no calm to sample slowly in")
        raise


def _gaps(series: list[tuple[int, float]]) -> list[int]:
    return [b[0] - a[0] for a, b in zip(series, series[1:], strict=False)]


@pytest.mark.slow
def test_cpu_burners_switch_cpupercent_to_fast_sampling_in_whisper(tmp_path: Path, carbon: CarbonCache) -> None:
    (master_port,) = free_ports(1)
    journal = tmp_path / "lagent.journal"
    master_conf, agent_conf = seed_configs(tmp_path, master_port, carbon.pickle_port)
    base = re.split(r"^\[sensor:", agent_conf.read_text(), flags=re.MULTILINE)[0]
    agent_conf.write_text(
        base + f"[lagent]\nspool dir = {tmp_path / 'spool-lagent'}\nself metrics interval = 1\n"
        f"journal file = {journal}\n\n"
        f"[sensor:CPUPercent]\ntotal = yes\ntime_interval = {SLOW}\nfast time_interval = {FAST}\n"
        f"fast when = CPUPercent.total > {THRESHOLD}\nfast hold = {HOLD}\n"
    )
    path = f"{HOST}.CPUPercent.total"
    with Daemon("lmaster", master_conf, tmp_path).start(listen_port=master_port):
        with Daemon("lagent", agent_conf, tmp_path).start() as agent:
            start = int(time.time())
            # before the burners: slow (a machine busy with other work may first hold it fast for a while)
            slow = _slow_again(carbon, path, start, "before the burners")
            assert SLOW <= max(_gaps(slow)) <= 2 * SLOW, slow  # shorter gaps only while fast or switching
            burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
            try:
                burn = int(time.time())
                fast = _from(carbon, path, burn + SLOW + 1, 4, timeout=60)
                # Each step FAST, by the agent's own timestamps: whisper keeps whole seconds, so a step of
                # 1.02 s from x.99 reads as a 2 s gap there (the grid is on the monotonic clock, not on seconds).
                stamps = _journaled(journal, path, fast[0][0])[:4]
                assert len(stamps) == 4 and int(stamps[0]) == fast[0][0], (stamps, fast)
                steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
                assert all(abs(step - FAST) < FAST / 2 for step in steps), (stamps, fast)
                assert carbon.wait_for(f"{HOST}.fructosa.agent.interval.CPUPercent",
                                       lambda s: s[-1][1] == FAST, since=burn, timeout=30)  # fmt: skip
            finally:
                for burner in burners:
                    burner.kill()
                    burner.wait()
            # after them: back to slow once the hold has passed (later, if other work keeps the machine busy)
            calm = int(time.time()) + HOLD + SLOW + 1
            after = _slow_again(carbon, path, calm, "after the burners")
            assert SLOW <= max(_gaps(after)) <= 2 * SLOW, after
            log = agent.output() + (tmp_path / "limon.log").read_text(errors="replace")
            assert re.search(
                rf"CPUPercent: fast sampling \({FAST} s\) because CPUPercent.total = [\d.]+ > {THRESHOLD}", log
            )
            assert f"CPUPercent: back to {SLOW} s after {HOLD} s hold" in log


# -- the plan: every adaptive sensor of an agent (no clock, no network) ----------


def _sensors(tmp_path: Path, section: str) -> tuple:
    return load_agent_config(str(_agent_file(tmp_path, section))).sensors


def _points(values: dict[str, float]) -> list:
    return [(f"{HOST}.{metric}", (0.0, value)) for metric, value in values.items()]


def test_plan_switches_on_the_datapoints_it_is_shown(tmp_path: Path) -> None:
    (sensor,) = _sensors(tmp_path, "time_interval = 60\nfast time_interval = 5\nfast when = CPUPercent.total > 80\n"
                                   "fast hold = 30\n")  # fmt: skip
    plan = AdaptivePlan([sensor])
    assert plan.watches("CPUPercent") and not plan.watches("VirtualMemory")
    assert plan.observe("CPUPercent", _points({"CPUPercent.total": 10.0}), now=0.0) == []
    assert plan.interval(sensor) == 60
    assert plan.observe("CPUPercent", _points({"CPUPercent.total": 90.0}), now=1.0) == ["CPUPercent"]
    assert plan.intervals() == {"CPUPercent": 5}
    assert plan.observe("CPUPercent", _points({"CPUPercent.total": 10.0}), now=2.0) == []  # held
    assert plan.observe("CPUPercent", _points({"CPUPercent.total": 10.0}), now=31.0) == ["CPUPercent"]
    assert plan.interval(sensor) == 60


def test_plan_slows_a_sensor_whose_condition_fell_silent(tmp_path: Path) -> None:
    (sensor,) = _sensors(tmp_path, "time_interval = 60\nfast time_interval = 5\nfast when = CPUPercent.total > 80\n"
                                   "fast hold = 30\n")  # fmt: skip
    plan = AdaptivePlan([sensor])
    plan.observe("CPUPercent", _points({"CPUPercent.total": 90.0}), now=0.0)
    # the condition still holds, but no verdict for the hold plus three (fast) intervals of its sensor
    assert not plan.expire("CPUPercent", now=44.0)
    assert plan.expire("CPUPercent", now=45.0)
    assert plan.interval(sensor) == 60


def test_plan_keeps_the_state_of_unchanged_sensors_across_an_update(tmp_path: Path) -> None:
    section = "time_interval = 60\nfast time_interval = 5\nfast when = CPUPercent.total > 80\n"
    (sensor,) = _sensors(tmp_path, section)
    plan = AdaptivePlan([sensor])
    plan.observe("CPUPercent", _points({"CPUPercent.total": 90.0}), now=0.0)
    plan.update([sensor])
    assert plan.interval(sensor) == 5
    (retimed,) = _sensors(tmp_path, section.replace("= 5", "= 10"))
    plan.update([retimed])
    assert plan.interval(retimed) == 60  # new settings: a new schedule, slow until its condition holds


# -- the agent's bookkeeping (in process, no network) ------------------------


def test_agent_switches_reports_and_keeps_state_across_reload(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from fructosa.agent import Agent

    section = "time_interval = 60\nfast time_interval = 5\nfast when = CPUPercent.total > 80 or CPUPercent.7 > 99\n"
    config = load_agent_config(str(_agent_file(tmp_path, section)))

    async def scenario() -> None:
        agent = Agent(config)
        (sensor,) = config.sensors
        agent.record("CPUPercent", {"0": 10.0, "total": 10.0})
        assert agent.current_interval(sensor) == 60
        agent.record("CPUPercent", {"0": 95.0, "total": 93.1})
        assert agent.current_interval(sensor) == 5
        agent.reload(config)  # unchanged settings: still fast (and the sensor task starts)
        assert agent.current_interval(sensor) == 5
        assert agent.self_metrics(0.0)["interval"] == {"CPUPercent": 5}
        await agent.scheduler.stop()
        agent.scheduler.shutdown()

    with caplog.at_level("INFO", logger="fructosa"):
        asyncio.run(asyncio.wait_for(scenario(), 20))
    messages = [record.getMessage() for record in caplog.records]
    assert "CPUPercent: fast sampling (5 s) because CPUPercent.total = 93.1 > 80" in messages
    assert [m for m in messages if "no metric CPUPercent.7" in m] == [
        "CPUPercent has no metric CPUPercent.7: 'fast when' conditions on it never hold"
    ]
