"""A real Prometheus server scraping lmaster's /metrics, and lmaster scraping exporters itself (/api/scrapes).

Prometheus and the node exporter are Debian's binaries run by
tests/support/prometheus.py; /metrics is served by the real application
(make_app + add_metrics_routes) over a LatestValues fed real Blocks; the
hostile exporters are a local aiohttp server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from support.prometheus import HostileExporters, NodeExporter, PrometheusServer, ServedApp, unavailable_reason
from support.waiting import wait_for

from fructosa.graphite_paths import Datapoint
from fructosa.http.app import make_app
from fructosa.http.metrics import add_metrics_routes
from fructosa.http.scrapes import add_scrapes_routes
from fructosa.http.settings import HttpSettings
from fructosa.http.state import HttpState, StaticNodes
from fructosa.prometheus.scrapes import STATE_FILE, Scrapes, ScrapeSettings, url_host
from fructosa.taps.latest import LatestValues
from fructosa.wire.blocks import Block

pytestmark = pytest.mark.timeout(180)
needs_prometheus = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
TOKEN = b"scrapes-token-0123456789"
AUTH = {"Authorization": "Bearer " + TOKEN.decode()}
FAST = ScrapeSettings(min_period=0.2, timeout=1.0)


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 120) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout))


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll on the event loop (the scrapes run on it) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not so within {timeout} s"
        await asyncio.sleep(0.05)


@needs_prometheus
def test_real_prometheus_scrapes_metrics_and_answers_queries(tmp_path):
    store = LatestValues()

    def feed() -> None:  # the agents' blocks, fresh each time (Prometheus scrapes every second)
        now = time.time()
        store.observe(Block.of([
            ("node01.VirtualMemory.percent", (now, 61.5)), ("node01.CPUPercent.0", (now, 12.0)),
            ("node01.CPUPercent.3", (now, 87.25)), ("node01.CPUTimes.cpu0.user", (now, 4321.0)),
        ]), "node01")  # fmt: skip
        store.observe(Block.of([("node02.VirtualMemory.percent", (now, 33.0))]), "node02")

    feed()
    app = make_app(HttpSettings(), HttpState(StaticNodes(), store))
    add_metrics_routes(app, store)
    with ServedApp(app) as served, PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{served.port}"]) as server:
        served.call(asyncio.sleep(0))  # the store is fed on the server's loop from here on
        ticker = {"running": True}

        async def keep_feeding() -> None:
            while ticker["running"]:
                feed()
                await asyncio.sleep(0.5)

        feeding = asyncio.run_coroutine_threadsafe(keep_feeding(), served.loop)
        try:
            memory = wait_for(
                lambda: server.query('fructosa_virtual_memory_percent{host="node01"}'), 60,
                "Prometheus has node01's memory", describe=server.targets_health,
            )  # fmt: skip
            assert float(memory[0]["value"][1]) == 61.5
            cpu = wait_for(lambda: server.query('fructosa_cpu_percent{cpu="3"}'), 30, "Prometheus has CPU 3")
            assert cpu[0]["metric"]["host"] == "node01" and float(cpu[0]["value"][1]) == 87.25
            both = server.query("fructosa_virtual_memory_percent")
            assert {row["metric"]["host"]: float(row["value"][1]) for row in both} == {"node01": 61.5, "node02": 33.0}
            counter = server.query("fructosa_cpu_times_user_total")
            assert float(counter[0]["value"][1]) == 4321.0
            assert all(target["health"] == "up" for target in server.targets_health())
        finally:
            ticker["running"] = False
            feeding.result(10)


@needs_prometheus
def test_lmaster_scrapes_the_real_node_exporter_into_datapoints(tmp_path):
    emitted: list[Datapoint] = []
    with NodeExporter(tmp_path / "node-exporter") as exporter:

        async def scenario() -> None:
            scrapes = Scrapes(emitted.extend, tmp_path / "state", FAST)
            await scrapes.start()
            try:
                target, new = scrapes.add(exporter.url, 0.5)
                assert new
                await until(lambda: target.last_scrape is not None, 30, "a successful scrape")
                paths = {path for path, _ in emitted}
                assert "127_0_0_1.Prometheus.node_load1" in paths
                assert "127_0_0_1.Prometheus.node_cpu_seconds_total.cpu.0.mode.idle" in paths
                assert target.last_error is None and target.series == len({p for p, _ in emitted})
            finally:
                await scrapes.stop()

        run(scenario)


def test_slow_huge_and_broken_targets_never_hold_up_the_others(tmp_path):
    with HostileExporters() as hostile:
        emitted: list[Datapoint] = []

        async def scenario() -> None:
            scrapes = Scrapes(emitted.extend, tmp_path, FAST)
            await scrapes.start()
            try:
                targets = {name: scrapes.add(hostile.url(name), 0.5)[0] for name in
                           ("slow", "trickle", "huge", "malformed", "error", "good")}  # fmt: skip
                gaps: list[float] = []
                started = last = time.monotonic()
                good_scrapes = 0
                previous = None
                while time.monotonic() - started < 4:
                    await asyncio.sleep(0.01)
                    gaps.append(time.monotonic() - last)
                    last = time.monotonic()
                    if targets["good"].last_scrape != previous:
                        previous, good_scrapes = targets["good"].last_scrape, good_scrapes + 1
                assert good_scrapes >= 4, "the good target was held up"
                assert max(gaps) < 0.5, f"the event loop stalled {max(gaps):.2f} s"
                assert "within 0.5 s" in targets["slow"].last_error
                assert "within 0.5 s" in targets["trickle"].last_error
                assert "over" in targets["huge"].last_error
                assert "not a Prometheus exposition" in targets["malformed"].last_error
                assert "HTTP 500" in targets["error"].last_error
                assert {path for path, _ in emitted} == {"127_0_0_1.Prometheus.up",
                                                         "127_0_0_1.Prometheus.jobs_total.queue.gpu"}  # fmt: skip
            finally:
                await scrapes.stop()

        run(scenario)


def test_targets_survive_a_restart_and_the_file_is_written_atomically(tmp_path, caplog):
    async def scenario() -> None:
        first = Scrapes(lambda datapoints: None, tmp_path, FAST)
        target, _ = first.add("http://127.0.0.1:9/metrics", 30)
        other, _ = first.add("https://exporter.example.org:9100/metrics", 60)
        assert first.remove(other.id) and not first.remove(other.id)
        saved = json.loads((tmp_path / STATE_FILE).read_text())
        assert saved == [{"id": target.id, "url": "http://127.0.0.1:9/metrics", "period": 30.0}]
        assert sorted(path.name for path in tmp_path.iterdir()) == [STATE_FILE]  # no temp file left behind
        second = Scrapes(lambda datapoints: None, tmp_path, FAST)
        await second.start()
        try:
            assert list(second.targets) == [target.id]
        finally:
            await second.stop()
        (tmp_path / STATE_FILE).write_text("{not json")
        third = Scrapes(lambda datapoints: None, tmp_path, FAST)
        await third.start()
        assert third.targets == {}
        await third.stop()

    run(scenario)
    assert "cannot read the scrape targets" in caplog.text
    assert url_host("http://switch01.example.org:9116/metrics") == "switch01"
    assert url_host("http://[::1]:9100/metrics") == "ip6___1"


def test_scrapes_api(tmp_path):
    with HostileExporters() as hostile:
        scrapes = Scrapes(lambda datapoints: None, tmp_path, FAST)
        store = LatestValues()
        app = make_app(HttpSettings(token=TOKEN), HttpState(StaticNodes(), store))
        add_scrapes_routes(app, scrapes)

        async def scenario() -> None:
            await scrapes.start()
            try:
                async with TestClient(TestServer(app)) as client:
                    await _api_checks(client, hostile.url("good"), scrapes)
            finally:
                await scrapes.stop()

        run(scenario)


async def _api_checks(client: TestClient, good_url: str, scrapes: Scrapes) -> None:
    document = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    assert {"/api/scrapes", "/api/scrapes/{id}"} <= set(document["paths"])
    schema = {"components": document["components"], "$ref": "#/components/schemas/ScrapeTargets"}

    assert (await client.get("/api/scrapes")).status == 401
    assert (await client.post("/api/scrapes", json={"url": good_url, "period": 1})).status == 401
    for body, reason in [
        ({"url": "ftp://127.0.0.1/metrics", "period": 30}, "http"),
        ({"url": "file:///etc/passwd", "period": 30}, "http"),
        ({"url": "http://user:pw@127.0.0.1/metrics", "period": 30}, "credentials"),
        ({"url": good_url, "period": 0}, "period"),
        ({"url": good_url, "period": "30"}, "period"),
        ({"url": good_url, "period": 30, "host": "x"}, "unknown field"),
        ([good_url], "object"),
    ]:
        response = await client.post("/api/scrapes", json=body, headers=AUTH)
        assert response.status == 400, body
        assert reason in (await response.json())["error"]
    response = await client.post("/api/scrapes", data=b"{nope", headers=AUTH)
    assert response.status == 400 and "JSON" in (await response.json())["error"]

    response = await client.post("/api/scrapes", json={"url": good_url, "period": 0.5}, headers=AUTH)
    assert response.status == 201
    created = await response.json()
    again = await client.post("/api/scrapes", json={"url": good_url, "period": 1}, headers=AUTH)
    assert again.status == 200 and (await again.json())["id"] == created["id"]
    await until(lambda: scrapes.targets[created["id"]].last_scrape is not None, 20, "the target is scraped")
    listed = await (await client.get("/api/scrapes", headers=AUTH)).json()
    jsonschema.Draft202012Validator(schema).validate(listed)
    assert listed[0]["last_scrape"] is not None and listed[0]["last_error"] is None and listed[0]["series"] == 2
    assert listed[0]["period"] == 1.0

    response = await client.delete(f"/api/scrapes/{created['id']}", headers=AUTH)
    assert response.status == 204
    response = await client.delete(f"/api/scrapes/{created['id']}", headers=AUTH)
    assert response.status == 404 and "no scrape target" in (await response.json())["error"]
    assert await (await client.get("/api/scrapes", headers=AUTH)).json() == []


def test_state_path_is_optional():
    scrapes = Scrapes(lambda datapoints: None, None, FAST)
    target, new = scrapes.add("http://127.0.0.1:9100/metrics", 30)
    assert new and scrapes.targets == {target.id: target}
    assert not Path(STATE_FILE).exists()


def test_openapi_documents_the_added_routes():
    """With /metrics and /api/scrapes added, the document still lists exactly the served /api routes."""
    store = LatestValues()
    app = make_app(HttpSettings(token=TOKEN), HttpState(StaticNodes(), store))
    add_metrics_routes(app, store)
    add_scrapes_routes(app, Scrapes(lambda datapoints: None, None, FAST))

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            document = await (await client.get("/api/openapi.json", headers=AUTH)).json()
            served = {resource.canonical for resource in app.router.resources() if resource.canonical != "/"}
            served = {path for path in served if path.startswith("/api") or path == "/metrics"}
            assert served == {path for path in document["paths"] if path.startswith("/api") or path == "/metrics"}
            for path_item in document["paths"].values():
                for operation in path_item.values():
                    assert {"401", "400"} <= set(operation["responses"])
            for schema in document["components"]["schemas"].values():
                jsonschema.Draft202012Validator.check_schema(schema)

    run(scenario)
