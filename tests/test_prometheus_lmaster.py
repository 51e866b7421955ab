"""Prometheus around a real lmaster: scraped by a real Prometheus server, and scraping exporters itself.

One carbon-cache, one lmaster (``[http]`` with a bearer token, relaying to
carbon, reporting every second), two lagents sending CPU and memory every
2 s, and a third running the ``Prometheus`` sensor against a real node
exporter (Debian's binaries, tests/support/prometheus.py). What Prometheus
reads from ``/metrics`` is compared with what whisper holds; lmaster's own
scrapes (``/api/scrapes``) are followed into whisper and across a restart;
a target that never answers is shown not to delay the agents' data.

Whisper's points are the agents' timestamps; Prometheus stamps a sample with
its scrape time, and what it scraped is the newest value lmaster had then.
So a value Prometheus holds at time t must be one whisper holds for a
timestamp shortly before t (:data:`WINDOW`); the agents sample every 2 s on
1-second whisper slots, so no slot holds two samples.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from fructosa.graphite_paths import short_hostname
from fructosa.prometheus.scrapes import STATE_FILE
from tests.support.carbon import CarbonCache, free_ports
from tests.support.configs import agent_ini, master_ini
from tests.support.daemons import Daemon
from tests.support.prometheus import HostileExporters, NodeExporter, PrometheusServer, unavailable_reason
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

TOKEN = "prometheus-token-" + "0123456789abcdef" * 2
AGENTS = ("node-a", "node-b")
EXPORTER_AGENT = "node-prom"
SAMPLE_INTERVAL = 2
SENSORS = {
    "CPUPercent": {"time_interval": SAMPLE_INTERVAL},
    "VirtualMemory": {"time_interval": SAMPLE_INTERVAL},
}
WINDOW = 8.0
"""Seconds before a Prometheus sample in which whisper must hold its value (a sample interval, the way
from the agent through lmaster, and slack for a loaded machine)."""
SCRAPE_PERIOD = 5
"""lmaster's own scrapes: the shortest period it accepts."""
EXPORTER_HOST = "127_0_0_1"
"""The node exporter at 127.0.0.1 as lmaster's scrapes name it: the IP address, dots as ``_``."""
LAG_LIMIT = 4.0
"""Seconds from an agent's timestamp to its point in whisper, at most, while targets hang (about 1 s measured
here; scrapes that blocked the event loop 2 s each made it 5 s)."""


class Site:
    """carbon-cache, node exporter, lmaster and its agents; requests to lmaster's HTTP API."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.carbon = CarbonCache(workdir / "carbon")
        self.exporter = NodeExporter(workdir / "node-exporter")
        self.master_port, self.http_port = free_ports(2)
        self.token_file = workdir / "http-token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)
        self.spool_dir = workdir / "spool-lmaster"
        self.master_conf = workdir / "lmaster.conf"
        self.master = Daemon("lmaster", self.master_conf, workdir)
        self.agents: list[Daemon] = []

    def start(self) -> None:
        self.carbon.start()
        self.exporter.start()
        http = {"listen": f"127.0.0.1:{self.http_port}", "token file": self.token_file}
        self.master_conf.write_text(
            master_ini(
                self.workdir, self.master_port, self.carbon.pickle_port,
                lmaster={"self metrics interval": 1},
                graphite={"carbon receiver plaintext port": self.carbon.line_port},
                sections={"http": http},
            )
        )  # fmt: skip
        self.master.start(listen_port=self.http_port)
        prometheus_sensor = {
            "Prometheus": {"time_interval": SAMPLE_INTERVAL, "urls": self.exporter.url, "exclude": "go_* promhttp_*"}
        }
        for host, sensors in [*((host, SENSORS) for host in AGENTS), (EXPORTER_AGENT, prometheus_sensor)]:
            conf = self.workdir / f"{host}.conf"
            conf.write_text(agent_ini(self.workdir, self.master_port, hostname=host, sensors=sensors))
            (self.workdir / host).mkdir(exist_ok=True)
            self.agents.append(Daemon("lagent", conf, self.workdir / host).start())

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.master.stop()
        self.exporter.stop()
        self.carbon.stop()

    def restart_master(self) -> None:
        self.master.stop()
        self.master.start(listen_port=self.http_port)

    def request(self, method: str, path: str, body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
        """(status, JSON body, or text when not JSON)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            kind = response.getheader("Content-Type", "")
        finally:
            connection.close()
        return response.status, json.loads(raw) if kind.startswith("application/json") else raw.decode()

    def targets(self) -> list[dict[str, Any]]:
        status, body = self.request("GET", "/api/scrapes")
        assert status == 200, body
        return body

    def saved_targets(self) -> list[dict[str, Any]]:
        return json.loads((self.spool_dir / STATE_FILE).read_text())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("prometheus-lmaster"))
    try:
        site.start()
        for host in AGENTS:
            site.carbon.wait_for(f"{host}.VirtualMemory.percent", timeout=30)
        yield site
    finally:
        site.stop()


def whisper_value_problems(
    carbon: CarbonCache, path: str, prometheus_points: list[tuple[float, float]]
) -> tuple[list[tuple[float, float, list]], int]:
    """(Prometheus points whose value whisper lacks within :data:`WINDOW` before them, with what it holds
    there; how many points were compared). Waits until whisper holds a point past the last one (carbon writes
    a series' points in the order they came), so it has every one that could have been scraped."""
    last = prometheus_points[-1][0]
    whisper = carbon.wait_for(path, lambda points: bool(points) and points[-1][0] >= last, timeout=15)
    problems = []
    for when, value in prometheus_points:
        held = [stored for stamp, stored in whisper if when - WINDOW < stamp <= when + 1]  # graphyte rounds
        if value not in held:
            problems.append((when, value, held))
    return problems, len(prometheus_points)


def prometheus_points(server: PrometheusServer, selector: str, seconds: int = 30) -> list[tuple[float, float]]:
    """The one series ``selector`` names, over the last ``seconds``: (scrape time, value) pairs."""
    result = server.query(f"{selector}[{seconds}s]")
    if len(result) != 1:
        return []
    return [(float(when), float(text)) for when, text in result[0]["values"]]


def test_real_prometheus_reads_what_whisper_holds(site: Site) -> None:
    status, body = site.request("GET", "/metrics", token=None)
    assert status == 401 and "Bearer" in body["error"]
    status, text = site.request("GET", "/metrics")
    assert status == 200 and 'fructosa_virtual_memory_percent{host="node-a"}' in text
    last_cpu = str(psutil.cpu_count() - 1)
    lmaster = f"fructosa.lmaster.{short_hostname(socket.gethostname())}"
    compared = {
        'fructosa_virtual_memory_percent{host="node-a"}': "node-a.VirtualMemory.percent",
        'fructosa_virtual_memory_percent{host="node-b"}': "node-b.VirtualMemory.percent",
        'fructosa_cpu_percent{host="node-a",cpu="0"}': "node-a.CPUPercent.0",
        f'fructosa_cpu_percent{{host="node-b",cpu="{last_cpu}"}}': f"node-b.CPUPercent.{last_cpu}",
        f'node_load1{{host="{EXPORTER_AGENT}"}}': f"{EXPORTER_AGENT}.Prometheus.node_load1",
        "fructosa_lmaster_cpu_percent": f"{lmaster}.cpu_percent",  # the report's copy, not a sample of its own
        "fructosa_lmaster_rss_bytes": f"{lmaster}.rss_bytes",
    }
    prometheus_dir = site.workdir / "prometheus"
    targets = [f"127.0.0.1:{site.http_port}"]
    with PrometheusServer(prometheus_dir, targets, interval=1, credentials_file=site.token_file) as server:
        wait_for(
            lambda: [target["health"] for target in server.targets_health()] == ["up"], 60,
            "Prometheus scraping lmaster with the token", describe=server.targets_health,
        )  # fmt: skip
        series = {}
        for selector in compared:  # ten scrapes of each, at least
            series[selector] = wait_for(
                lambda selector=selector: (points := prometheus_points(server, selector)) and len(points) >= 10
                and points, 60, f"ten scrapes of {selector}",
                describe=lambda selector=selector: server.query(f"{selector}[30s]"),
            )  # fmt: skip
        cpus = {sample["metric"]["cpu"] for sample in server.query('fructosa_cpu_percent{host="node-a"}')}
        assert cpus == {str(cpu) for cpu in range(psutil.cpu_count())}
        labelled = server.query(f'node_cpu_seconds_total{{host="{EXPORTER_AGENT}",cpu="0",mode="idle"}}')
        assert len(labelled) == 1 and float(labelled[0]["value"][1]) > 0
    for selector, path in compared.items():
        problems, count = whisper_value_problems(site.carbon, path, series[selector])
        assert not problems, f"{selector}: {len(problems)} of {count} not in whisper's {path}: {problems[:3]}"


def test_agent_prometheus_sensor_sends_node_exporter_series(site: Site) -> None:
    carbon, prefix = site.carbon, f"{EXPORTER_AGENT}.Prometheus"
    load = carbon.wait_for(f"{prefix}.node_load1", timeout=30)[-1][1]
    assert abs(load - os.getloadavg()[0]) < 1 + 0.25 * load, (load, os.getloadavg())
    total = carbon.wait_for(f"{prefix}.node_memory_MemTotal_bytes", timeout=30)[-1][1]
    assert total == psutil.virtual_memory().total
    idle = carbon.wait_for(f"{prefix}.node_cpu_seconds_total.cpu.0.mode.idle", lambda points: len(points) >= 2)
    assert idle[-1][1] >= idle[0][1] > 0
    assert abs(idle[-1][1] - psutil.cpu_times(percpu=True)[0].idle) < 60
    modes = {path.rsplit(".", 1)[1] for path in carbon.metric_paths()
             if path.startswith(f"{prefix}.node_cpu_seconds_total.cpu.0.mode.")}  # fmt: skip
    assert {"idle", "user", "system"} <= modes
    assert not any(path.startswith(f"{prefix}.go_") for path in carbon.metric_paths())  # exclude = go_*


def test_lmaster_scrapes_the_node_exporter_keeps_it_across_a_restart_and_forgets_it(site: Site) -> None:
    carbon, prefix = site.carbon, f"{EXPORTER_HOST}.Prometheus"
    registered_at = time.time()
    status, target = site.request("POST", "/api/scrapes", {"url": site.exporter.url, "period": SCRAPE_PERIOD})
    assert status == 201, target
    assert target["host"] == EXPORTER_HOST and target["url"] == site.exporter.url
    status, again = site.request("POST", "/api/scrapes", {"url": site.exporter.url, "period": SCRAPE_PERIOD})
    assert status == 200 and again["id"] == target["id"]
    status, refused = site.request("POST", "/api/scrapes", {"url": "ftp://127.0.0.1/metrics", "period": 30})
    assert status == 400 and "http" in refused["error"]

    total = carbon.wait_for(f"{prefix}.node_memory_MemTotal_bytes", timeout=30)[-1][1]
    assert total == psutil.virtual_memory().total
    carbon.wait_for(f"{prefix}.node_cpu_seconds_total.cpu.0.mode.idle")
    listed = wait_for(lambda: [t for t in site.targets() if t["last_scrape"]], 20, "a scrape listed")
    assert len(listed) == 1 and listed[0]["id"] == target["id"]
    assert registered_at <= listed[0]["last_scrape"] <= time.time() and listed[0]["last_error"] is None
    assert listed[0]["series"] > 10
    assert site.saved_targets() == [{"id": target["id"], "url": site.exporter.url, "period": SCRAPE_PERIOD}]

    site.restart_master()
    restarted_at = time.time()
    assert [t["id"] for t in site.targets()] == [target["id"]]
    carbon.wait_for(f"{prefix}.node_load1", lambda points: points[-1][0] >= int(restarted_at), timeout=30)
    for host in AGENTS:  # the agents came back too
        carbon.wait_for(f"{host}.VirtualMemory.percent", lambda points: points[-1][0] >= int(restarted_at), timeout=30)

    status, _ = site.request("DELETE", f"/api/scrapes/{target['id']}")
    assert status == 204
    deleted_at = time.time()
    assert site.targets() == [] and site.saved_targets() == []
    status, missing = site.request("DELETE", f"/api/scrapes/{target['id']}")
    assert status == 404 and target["id"] in missing["error"]
    # two scrape periods of the agents' data later, no scrape of the exporter since the DELETE
    carbon.wait_for("node-a.VirtualMemory.percent", lambda points: points[-1][0] >= deleted_at + 2 * SCRAPE_PERIOD,
                    timeout=30)  # fmt: skip
    assert carbon.series(f"{prefix}.node_load1")[-1][0] <= deleted_at + 1


def test_targets_that_hang_do_not_delay_the_agents(site: Site) -> None:
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}/metrics"
    with silent, HostileExporters() as hostile:
        ids = []
        for url in (silent_url, hostile.url("/trickle")):
            status, target = site.request("POST", "/api/scrapes", {"url": url, "period": SCRAPE_PERIOD})
            assert status == 201, target
            ids.append(target["id"])
        try:
            seen: dict[int, float] = {}
            path = "node-a.VirtualMemory.percent"
            start = time.time()

            def watched_long_enough() -> bool:
                now = time.time()
                for stamp, _ in site.carbon.series(path, since=int(start)):
                    seen.setdefault(stamp, now)
                errors = [t["last_error"] or "" for t in site.targets()]
                return now - start >= 3 * SCRAPE_PERIOD and all("no complete response" in e for e in errors)

            wait_for(watched_long_enough, 60, "three scrape periods with both targets failing",
                     interval=0.2, describe=site.targets)  # fmt: skip
            lags = {stamp: round(first_seen - stamp, 1) for stamp, first_seen in seen.items() if stamp > start + 1}
            assert len(lags) >= (3 * SCRAPE_PERIOD) // SAMPLE_INTERVAL - 2, lags
            assert max(lags.values()) <= LAG_LIMIT, lags
            stamps = sorted(lags)
            assert max(b - a for a, b in itertools.pairwise(stamps)) <= SAMPLE_INTERVAL + 1, stamps
        finally:
            for target_id in ids:
                assert site.request("DELETE", f"/api/scrapes/{target_id}")[0] == 204
