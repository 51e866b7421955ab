"""The CPU rate sensors' arithmetic on psutil's tuples gives exactly the figures of their
plain form (what the golden tests check), for any readings: zero, equal and decreasing
counters, one CPU or many, a window with no time elapsed on some CPU."""

from __future__ import annotations

import psutil
from hypothesis import given, settings
from hypothesis import strategies as st

from fructosa.sensors import REGISTRY, as_plain
from fructosa.sensors.cpu_window import total_time, window_is_usable

CPU_TIMES = type(psutil.cpu_times())
"""psutil's per-CPU times tuple on this host (its fields are the kernel's modes here)."""
SECONDS = st.one_of(
    st.sampled_from([0.0, 0.01, 1.0, 100.0]),
    st.floats(min_value=0.0, max_value=1e7, allow_nan=False, allow_infinity=False),
)


@st.composite
def readings(draw: st.DrawFn) -> dict:
    cpus = draw(st.integers(min_value=1, max_value=6))
    fields = len(CPU_TIMES._fields)
    current = [CPU_TIMES(*draw(st.lists(SECONDS, min_size=fields, max_size=fields))) for _ in range(cpus)]
    previous = draw(
        st.one_of(
            st.none(),
            st.just([]),
            st.just(list(current)),  # no time elapsed
            st.lists(st.builds(lambda values: CPU_TIMES(*values), st.lists(SECONDS, min_size=fields,
                     max_size=fields)), min_size=cpus, max_size=cpus),
            st.builds(lambda row: [CPU_TIMES(*(value / 2 for value in row)) for row in current], st.just(0)),
        )
    )  # fmt: skip
    return {"previous": previous, "current": current}


@settings(max_examples=300, deadline=None)
@given(raw=readings(), percpu=st.booleans(), total=st.booleans())
def test_cpu_percent_on_tuples_is_its_plain_shape(raw: dict, percpu: bool, total: bool) -> None:
    sensor = REGISTRY["CPUPercent"]({"percpu": percpu, "total": total})
    assert sensor.shape_tuples(raw) == sensor.shape(as_plain(raw))


@settings(max_examples=300, deadline=None)
@given(raw=readings(), percpu=st.booleans())
def test_cpu_times_percent_on_tuples_is_its_plain_shape(raw: dict, percpu: bool) -> None:
    sensor = REGISTRY["CPUTimesPercent"]({"percpu": percpu})
    expected = sensor.shape(as_plain(raw))
    assert sensor.shape_tuples(raw) == expected


@settings(max_examples=200, deadline=None)
@given(raw=readings())
def test_a_window_is_usable_on_tuples_as_on_dicts(raw: dict) -> None:
    previous, current = raw["previous"], raw["current"]
    if previous and len(previous) == len(current):
        plain = as_plain(raw)
        assert window_is_usable(previous, current) == window_is_usable(plain["previous"], plain["current"])
        assert window_is_usable(previous, current) == all(
            total_time(now) > total_time(then) for then, now in zip(plain["previous"], plain["current"], strict=True)
        )
