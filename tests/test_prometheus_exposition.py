"""``/metrics``: the naming rule, the direct writer against prometheus-client's own exposition, the handler.

The store is a real LatestValues fed real Blocks; the handler runs in a real
aiohttp application (make_app plus add_metrics_routes).
"""

from __future__ import annotations

import asyncio
import gzip
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from fructosa.http.app import make_app
from fructosa.http.metrics import add_metrics_routes
from fructosa.http.settings import HttpSettings
from fructosa.http.state import HttpState, StaticNodes
from fructosa.prometheus import naming
from fructosa.prometheus.exposition import (
    LatestCollector,
    MetricsExposition,
    MetricsSettings,
    host_pattern_problem,
)
from fructosa.taps.latest import LatestValues
from fructosa.wire.blocks import Block

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "sensors" / "testcases"
NOW = time.time()
TOKEN = b"metrics-token-0123456789"


def golden_paths() -> list[str]:
    """Every path the sensors' golden cases send (the real path shapes)."""
    paths = set()
    for expected in GOLDEN.glob("*/*/expected.out"):
        for line in expected.read_text().splitlines():
            if line and not line.startswith("#"):
                paths.add(line.split()[0])
    return sorted(paths)


def fed_store(now: float = NOW) -> LatestValues:
    store = LatestValues()
    blocks = {
        "node01": [
            ("node01.CPUPercent.0", 20.0), ("node01.CPUPercent.1", 40.0), ("node01.CPUPercent.total", 30.0),
            ("node01.VirtualMemory.percent", 55.5), ("node01.CPUTimes.cpu0.user", 1234.5),
            ("node01.DiskUsage.home.free", 1e9), ("node01.SlurmJobs.job_4711.rss", 2e9),
            ("node01.Prometheus.node_load1", 0.25), ("node01.Users.per_user.o_brien", 2.0),
        ],
        "node02": [("node02.CPUPercent.0", 5.0), ("node02.VirtualMemory.percent", 10.0)],
    }  # fmt: skip
    for host, points in blocks.items():
        store.observe(Block.of([(path, (now - 5, value)) for path, value in points]), host)
    store.observe(Block.of([("stale01.VirtualMemory.percent", (now - 1000, 99.0))]), "stale01")
    return store


def body_of(exposition: MetricsExposition, **options) -> str:
    snapshot = exposition.snapshot(NOW, options.pop("host_pattern", None))
    return b"".join(exposition.render(snapshot, **options)).decode()


def samples_of(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# -- naming -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name", "labels"),
    [
        ("node01.VirtualMemory.percent", "fructosa_virtual_memory_percent", {}),
        ("node01.CPUPercent.3", "fructosa_cpu_percent", {"cpu": "3"}),
        ("node01.CPUPercent.total", "fructosa_cpu_percent", {}),
        ("node01.CPUTimes.cpu2.idle", "fructosa_cpu_times_idle_total", {"cpu": "2"}),
        ("node01.DiskIOCounters.nvme0n1.read_bytes", "fructosa_disk_io_counters_read_bytes_total", {"disk": "nvme0n1"}),
        ("node01.NetIOCounters.ib0.bytes_recv", "fructosa_net_io_counters_bytes_recv_total", {"interface": "ib0"}),
        ("node01.NetIFStats.eth0.speed", "fructosa_net_if_stats_speed", {"interface": "eth0"}),
        ("node01.DiskUsage.scratch_local.percent", "fructosa_disk_usage_percent", {"mount": "scratch_local"}),
        ("node01.SlurmJobs.job_4711.cpu_percent", "fructosa_slurm_jobs_cpu_percent", {"job_id": "4711"}),
        ("node01.GPU.0000_18_00_0.utilization.gpu", "fructosa_gpu_utilization_gpu", {"gpu": "0000_18_00_0"}),
        ("node01.TopProcesses.cpu.rank_2.rss", "fructosa_top_processes_cpu_rss", {"rank": "2"}),
        ("node01.SwapMemory.sin", "fructosa_swap_memory_sin_total", {}),
        ("node01.SwapMemory.percent", "fructosa_swap_memory_percent", {}),
        ("node01.CPUStats.ctx_switches", "fructosa_cpu_stats_ctx_switches_total", {}),
        ("node01.fructosa.up", "fructosa_up", {}),
        ("node01.Prometheus.x.a.1.a.2", "x_a_1_a_2", {}),  # a label twice is no series: all in the name
        ("node01.Prometheus.x.host.h.job", "x_host_h_job", {}),
        ("node01.Prometheus.x.host.h", "x", {"exported_host": "h"}),
        ("node01.Prometheus.node_cpu_seconds_total.cpu.0.mode.idle", "node_cpu_seconds_total",
         {"cpu": "0", "mode": "idle"}),
    ],
)  # fmt: skip
def test_naming_rule_examples(path, name, labels):
    series = naming.series_of(path)
    assert series is not None
    assert naming.exposed_name(series) == name
    assert dict(series.labels) == {"host": "node01", **labels}


def test_every_golden_path_is_a_valid_series_and_each_family_has_one_type():
    metric = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
    label = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
    types: dict[str, set[str]] = {}
    seen: dict[tuple, str] = {}
    for path in golden_paths():
        series = naming.series_of(path)
        assert series is not None, path
        assert metric.fullmatch(series.name), path
        assert all(label.fullmatch(name) and value for name, value in series.labels), path
        types.setdefault(series.name, set()).add(series.type)
        identity = (series.name, series.labels)
        assert identity not in seen, f"{path} and {seen.get(identity)} would be one series"
        seen[identity] = path
    assert {name: kinds for name, kinds in types.items() if len(kinds) > 1} == {}
    # Instances are labels, not names: per-CPU and per-disk series share one metric each.
    assert len({s for s in types if s.startswith("fructosa_cpu_percent")}) == 1


def test_counters_are_the_sensors_that_count_since_boot():
    for sensor in ("CPUTimes", "CPUStats", "DiskIOCounters", "NetIOCounters"):
        assert naming.RULES[sensor].counters is True
    for sensor in ("CPUPercent", "VirtualMemory", "DiskUsage", "GPU", "SlurmJobs"):
        assert naming.RULES[sensor].counters is False


def test_every_registered_sensor_has_a_rule():
    from fructosa.sensors import REGISTRY

    assert sorted(set(REGISTRY) - set(naming.RULES) - {naming.PROMETHEUS_SENSOR}) == []


def test_readme_table_is_the_rule():
    readme = (ROOT / "README.md").read_text()
    assert naming.rule_table() in readme, "README's Prometheus table differs: paste naming.rule_table()"


def test_lmaster_self_metrics_names():
    assert naming.exposed_name(naming.lmaster_series("datapoints_in")) == "fructosa_lmaster_datapoints_in_total"
    assert naming.exposed_name(naming.lmaster_series("rss_bytes")) == "fructosa_lmaster_rss_bytes"
    sink = naming.lmaster_series("graphite.a.sent")
    assert (sink.name, dict(sink.labels)) == ("fructosa_lmaster_sink_sent", {"sink": "graphite", "destination": "a"})


# -- the body ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("openmetrics", [False, True])
def test_writer_agrees_with_prometheus_client(openmetrics):
    exposition = MetricsExposition(fed_store())
    ours = body_of(exposition, openmetrics=openmetrics)
    reference = generate_latest(LatestCollector(exposition, exposition.snapshot(NOW))).decode()
    if openmetrics:
        assert ours.endswith("# EOF\n")
        parsed = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parse_openmetrics(ours)
            for s in family.samples
        }
    else:
        parsed = samples_of(ours)
    expected = samples_of(reference)
    assert {key: value for key, value in parsed.items() if not key[0].startswith("fructosa_lmaster")} == expected
    assert expected[("fructosa_cpu_percent", (("cpu", "1"), ("host", "node01")))] == 40.0
    assert expected[("fructosa_cpu_percent", (("host", "node01"),))] == 30.0
    assert expected[("fructosa_cpu_times_user_total", (("cpu", "0"), ("host", "node01")))] == 1234.5
    assert expected[("node_load1", (("host", "node01"),))] == 0.25
    # Family headers as prometheus-client writes them (HELP from the sensor's description).
    if not openmetrics:
        for line in reference.splitlines():
            if line.startswith("# "):
                assert line in ours


def test_stale_hosts_are_left_out_and_host_pattern_limits():
    exposition = MetricsExposition(fed_store(), MetricsSettings(staleness=300))
    hosts = {dict(key[1]).get("host") for key in samples_of(body_of(exposition))}
    assert hosts == {"node01", "node02", None}  # None: lmaster's own series
    only = {dict(key[1]).get("host") for key in samples_of(body_of(exposition, host_pattern="node0[2]"))}
    assert only == {"node02", None}
    longer = MetricsExposition(fed_store(), MetricsSettings(staleness=2000))
    assert "stale01" in body_of(longer)
    assert host_pattern_problem("node*") is None
    assert host_pattern_problem('x"}') and host_pattern_problem("") and host_pattern_problem("a" * 201)


def test_cardinality_cap_cuts_and_counts():
    exposition = MetricsExposition(fed_store(), MetricsSettings(max_series=4))
    samples = samples_of(body_of(exposition))
    fed = [key for key in samples if not key[0].startswith("fructosa_lmaster")]
    assert len(fed) == 4
    assert samples[("fructosa_lmaster_metrics_series_dropped_total", ())] == 7.0  # 11 fresh series, 4 written
    samples = samples_of(body_of(exposition))
    assert samples[("fructosa_lmaster_metrics_series_dropped_total", ())] == 14.0


def test_gzip_body_and_label_escaping():
    store = LatestValues()
    store.observe(Block.of([("n1.Prometheus.x.path.a_b", (NOW, 1.0))]), "n1")
    exposition = MetricsExposition(store, self_metrics=lambda: {"datapoints_in": 3.0, "carbon.queued": 2.0})
    text = gzip.decompress(b"".join(exposition.render(exposition.snapshot(NOW), gzip=True))).decode()
    samples = samples_of(text)
    assert samples[("x", (("host", "n1"), ("path", "a_b")))] == 1.0
    assert samples[("fructosa_lmaster_datapoints_in_total", ())] == 3.0
    assert samples[("fructosa_lmaster_sink_queued", (("sink", "carbon"),))] == 2.0


def test_settings_refuse_nonsense():
    with pytest.raises(ValueError, match="staleness"):
        MetricsSettings(staleness=0)
    with pytest.raises(ValueError, match="max series"):
        MetricsSettings(max_series=0)


# -- the handler ----------------------------------------------------------------------------------------


def with_client(test: Callable[[TestClient], Awaitable[None]], store: LatestValues | None = None, **http) -> None:
    store = store or fed_store(time.time())  # the handler judges staleness by the real clock
    app = make_app(HttpSettings(**http), HttpState(StaticNodes(), store))
    add_metrics_routes(app, store, MetricsSettings(), self_metrics=lambda: {"agents_connected": 2.0})

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            await test(client)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_handler_formats_errors_and_openapi():
    async def test(client: TestClient) -> None:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = samples_of(await response.text())
        assert samples[("fructosa_virtual_memory_percent", (("host", "node01"),))] == 55.5
        assert samples[("fructosa_lmaster_agents_connected", ())] == 2.0
        response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert list(parse_openmetrics(await response.text()))
        response = await client.get("/metrics?host=node02")
        assert {dict(k[1]).get("host") for k in samples_of(await response.text())} == {"node02", None}
        for bad in ("/metrics?host=a%22b", "/metrics?hots=x"):
            response = await client.get(bad)
            assert response.status == 400 and "error" in await response.json()
        document = await (await client.get("/api/openapi.json")).json()
        assert "/metrics" in document["paths"] and "200" in document["paths"]["/metrics"]["get"]["responses"]

    with_client(test)


def test_handler_asks_for_the_token_unless_public_read():
    async def test(client: TestClient) -> None:
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0000000"})).status == 401
        response = await client.get("/metrics", headers={"Authorization": "Bearer " + TOKEN.decode()})
        assert response.status == 200 and "fructosa_cpu_percent" in await response.text()

    with_client(test, token=TOKEN)

    async def public(client: TestClient) -> None:
        assert (await client.get("/metrics")).status == 200

    with_client(public, token=TOKEN, public_read=True)


def test_large_scrape_does_not_stall_the_event_loop():
    """5,000 hosts × 300 series: the loop keeps ticking while the body is built and streamed."""
    from benchmarks.metrics_exposition import filled_store

    now = time.time()
    store = filled_store(5000, 300, now)

    async def test(client: TestClient) -> None:
        gaps: list[tuple[float, float]] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            """(CPU time this process used, wall time) between two ticks. A stall is the process running (the
            loop busy, or a thread holding the GIL) without the loop ticking; a busy machine may also leave the
            whole process waiting for a core, which is no stall."""
            last, last_cpu = time.monotonic(), time.process_time()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                gaps.append((min(time.process_time() - last_cpu, time.monotonic() - last), time.monotonic() - last))
                last, last_cpu = time.monotonic(), time.process_time()

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        response = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        body = await response.read()
        elapsed = time.monotonic() - started
        stop.set()
        await ticking
        assert response.status == 200 and body.count(b"\n") > 1_500_000
        busiest = max(gaps)
        assert busiest[0] < 0.5, f"the event loop stalled {busiest[0]:.2f} s of CPU time ({busiest[1]:.2f} s wall)"
        assert elapsed < 30, elapsed  # about 2 s on an idle machine (benchmarks/README.md)

    with_client(test, store=store)


components = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True).map(lambda text: text.strip("_") or "x")
sensors = st.sampled_from([*naming.RULES, "Prometheus", "Foo-Bar", "Foo_Bar"])


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["n1", "n2"]), sensors, st.lists(components, max_size=5)), max_size=40))
def test_any_paths_make_an_exposition_both_parsers_accept(paths):
    store = LatestValues()
    for host, sensor, keys in paths:
        store.observe(Block.of([(".".join([host, sensor, *keys]), (NOW, 1.5))]), host)
    exposition = MetricsExposition(store)
    for openmetrics in (False, True):
        text = body_of(exposition, openmetrics=openmetrics)
        types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
        assert len(types) == len(set(types)), "a metric name has two TYPE lines: Prometheus refuses the scrape"
        parse = parse_openmetrics if openmetrics else text_string_to_metric_families
        written = sum(len(family.samples) for family in parse(text))
        assert written >= len({path for path in store.hosts() for path in (store.latest(path) or {})})


def test_concurrent_scrapes_agree():
    """Two Prometheus servers scraping at once build in two threads over one name cache."""
    from concurrent.futures import ThreadPoolExecutor

    store = LatestValues()
    for host in range(50):
        names = [f"Sensor{sensor}.field{field}" for sensor in range(30) for field in range(5)]
        store.observe(Block.of([(f"h{host}.{name}", (NOW, 1.0)) for name in names]), f"h{host}")
    exposition = MetricsExposition(store)
    with ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(lambda _: body_of(exposition), range(8)))
    stripped = {re.sub(r"fructosa_lmaster_metrics_scrapes_total .*", "", body) for body in bodies}
    assert len(stripped) == 1
    types = [line for line in bodies[0].splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types)) == 150 + 2
