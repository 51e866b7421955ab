"""The agent's Prometheus sensor against a real node exporter and against hostile local exporters.

The node exporter is Debian's ``prometheus-node-exporter`` binary, run by
tests/support/prometheus.py on a free loopback port; the hostile exporters
are a local aiohttp server (malformed, huge, slow, failing). The parser's
robustness is checked with hypothesis over exposition text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.carbon import free_ports
from support.prometheus import GOOD, HostileExporters, NodeExporter, unavailable_reason

from fructosa.graphite_paths import MAX_LEAVES_PER_SAMPLE, sample_to_datapoints
from fructosa.prometheus.parsing import ExpositionError, Filter, Parsed, add_samples, parse_exposition
from fructosa.sensors import REGISTRY
from fructosa.sensors.prometheus import fetch, url_problem

pytestmark = pytest.mark.timeout(120)
needs_exporter = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


def sensor(**settings):
    return REGISTRY["Prometheus"]({"timeout": 2.0, **settings})


def paths_of(value) -> dict[str, float]:
    sample = {"host": "node01", "sensor": "Prometheus", "time": 1_700_000_000, "value": value}
    return {path: number for path, (_, number) in sample_to_datapoints(sample)}


@pytest.fixture(scope="module")
def node_exporter(tmp_path_factory) -> Iterator[NodeExporter]:
    with NodeExporter(tmp_path_factory.mktemp("node-exporter")) as exporter:
        yield exporter


@needs_exporter
def test_sensor_scrapes_the_real_node_exporter(node_exporter):
    probe = sensor(urls=node_exporter.url, exclude="go_*")
    paths = paths_of(probe.measure())
    assert "node01.Prometheus.node_load1" in paths
    assert any(path.startswith("node01.Prometheus.node_cpu_seconds_total.cpu.0.mode.") for path in paths)
    assert "node01.Prometheus.node_cpu_seconds_total.cpu.0.mode.idle" in paths
    assert not any(".go_" in path for path in paths)
    assert paths["node01.Prometheus.node_memory_MemTotal_bytes"] > 0
    only = paths_of(sensor(urls=node_exporter.url, include="node_load*").measure())
    assert sorted(only) == [f"node01.Prometheus.node_load{n}" for n in (1, 15, 5)]


@needs_exporter
def test_max_series_cuts_and_counts(node_exporter, caplog):
    probe = sensor(urls=node_exporter.url, max_series=10)
    assert len(paths_of(probe.measure())) == 10
    assert probe.series_cut > 0
    assert "beyond max_series" in caplog.text


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileExporters]:
    with HostileExporters() as server:
        yield server


def test_bad_exporters_give_nothing_and_never_crash_or_stall(hostile, caplog):
    (closed,) = free_ports(1)
    urls = [hostile.url(name) for name in ("malformed", "error", "huge", "slow", "trickle")]
    urls += [f"http://127.0.0.1:{closed}/metrics", "ftp://127.0.0.1/metrics", hostile.url("good")]
    probe = sensor(urls=" ".join(urls), timeout=1.0)
    started = time.monotonic()
    paths = paths_of(probe.measure())
    elapsed = time.monotonic() - started
    assert paths == {"node01.Prometheus.up": 1.0, "node01.Prometheus.jobs_total.queue.gpu": 7.0}
    assert elapsed < 10, f"bad exporters held the sensor {elapsed:.1f} s"  # slow and trickle: about 1 s each
    assert probe.failures == 7
    for reason in ("not a Prometheus exposition", "HTTP 500", "over 16777216 bytes", "within 1 s", "only http"):
        assert reason in caplog.text
    caplog.clear()
    probe.measure()  # the same failures again: rate-limited, not logged again
    assert "not a Prometheus exposition" not in caplog.text


def test_all_exporters_down_sends_nothing(hostile):
    assert sensor(urls=hostile.url("error")).measure() is None


def test_fetch_caps_size_and_refuses_non_http():
    assert url_problem("http://127.0.0.1:9100/metrics") is None
    assert url_problem("file:///etc/passwd") and url_problem("http://:99999/") and url_problem("gopher://x")


def test_fetch_reads_a_good_exporter(hostile):
    assert fetch(hostile.url("good"), timeout=2) == GOOD


# -- parser robustness -------------------------------------------------------------------------------

ROBUST = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}", fullmatch=True)
label_values = st.text(min_size=0, max_size=20)
values = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**60), 2**60)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@st.composite
def expositions(draw) -> tuple[str, list[tuple[str, dict[str, str], float]]]:
    samples = []
    lines = []
    for name in draw(st.lists(names, min_size=1, max_size=8, unique=True)):
        lines.append(f"# TYPE {name} {draw(st.sampled_from(['gauge', 'untyped']))}")
        for labels in draw(st.lists(st.dictionaries(names, label_values, max_size=4), min_size=1, max_size=4)):
            value = draw(values)
            text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            lines.append(f"{name}{{{text}}} {value}" if labels else f"{name} {value}")
            samples.append((name, labels, float(value)))
    return "\n".join(lines) + "\n", samples


@ROBUST
@given(st.text(max_size=400))
def test_any_text_parses_or_is_refused_in_one_line(text):
    try:
        samples = parse_exposition(text)
    except ExpositionError as error:
        assert "\n" not in str(error)
        return
    parsed = Parsed()
    add_samples(parsed, samples, max_series=50)
    assert parsed.series <= 50
    paths_of(parsed.tree)  # whatever was kept flattens without a SampleError


@ROBUST
@given(expositions(), st.integers(1, 40))
def test_valid_expositions_become_bounded_paths(exposition, max_series):
    text, samples = exposition
    parsed = Parsed()
    add_samples(parsed, parse_exposition(text), Filter(), max_series)
    paths = paths_of(parsed.tree)
    assert len(paths) == parsed.series <= max_series
    assert parsed.nodes <= MAX_LEAVES_PER_SAMPLE
    kept = [sample for sample in samples if len(sample[1]) <= 3 and math.isfinite(sample[2])]
    assert parsed.series + parsed.cut + parsed.conflicts == len(kept)
    assert all(path.startswith("node01.Prometheus.") for path in paths)


def test_value_bound_per_sample_holds_with_a_huge_max_series():
    text = "".join(f'm{index % 7}{{a="{index}",b="x{index}",c="y"}} 1\n' for index in range(20_000))
    parsed = Parsed()
    add_samples(parsed, parse_exposition(text), max_series=1_000_000)
    assert parsed.nodes <= MAX_LEAVES_PER_SAMPLE and parsed.cut > 0
    assert len(paths_of(parsed.tree)) == parsed.series


def test_golden_case_folder_exists():
    assert (Path(__file__).parent / "sensors" / "testcases" / "Prometheus" / "node_exporter").is_dir()
