"""lmaster's [http] API against a real lmaster and real lagent processes.

One lmaster (no carbon: ``[Graphite] enabled = no``) serves the API on a
loopback port with a bearer token; three lagents with different host names
send to it. Every answer is checked against the OpenAPI document lmaster
serves. Destructive scenarios (a stopped agent, a killed one, reloads) start
agents of their own so the shared ones stay as they are.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import platform
import signal
import socket
import ssl
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import psutil
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fructosa import __version__
from fructosa.agent import facts
from fructosa.http.app import make_app
from fructosa.http.nodes import GROUPABLE
from fructosa.http.settings import HttpSettings
from fructosa.http.state import BuildBudget, HttpState, NodeRecord, StaticNodes
from fructosa.master.nodes import gpu_models
from fructosa.taps.latest import LatestValues
from fructosa.wire import protocol
from tests.support.carbon import can_connect, free_ports
from tests.support.configs import agent_ini, master_ini
from tests.support.daemons import Daemon, script
from tests.support.tls import OpenSSLMissing, make_pki
from tests.support.waiting import wait_for, wait_for_log

pytestmark = pytest.mark.timeout(180)

TOKEN = "http-token-" + "0123456789abcdef" * 2
HOSTS = ("node-a", "node-b", "node-c")
SENSORS = {"CPUPercent": {"time_interval": 1, "total": "yes"}, "VirtualMemory": {"time_interval": 1}}
MAX_CONNECTIONS = 16
API_PATHS = (
    "/api/nodes", "/api/nodes/node-a", "/api/nodes/node-a/latest", "/api/nodes/node-a/history",
    "/api/openapi.json", "/api/nodes/nobody", "/api/unknown",
)  # fmt: skip


class Cluster:
    """The shared lmaster and its agents, and an HTTP client for its API."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.master_port, self.http_port = free_ports(2)
        self.token_file = workdir / "http-token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)
        self.token = TOKEN
        self.master_conf = workdir / "lmaster.conf"
        self.write_master_conf()
        self.master = Daemon("lmaster", self.master_conf, workdir)
        self.agents: dict[str, Daemon] = {}
        self.document: dict[str, Any] = {}

    def write_master_conf(self, max_connections: int = MAX_CONNECTIONS, public_read: str = "no") -> None:
        http = {
            "listen": f"127.0.0.1:{self.http_port}",
            "token file": self.token_file,
            "public read": public_read,
            "max connections": max_connections,
            "request timeout": 30,
        }
        self.master_conf.write_text(
            master_ini(self.workdir, self.master_port, graphite={"enabled": "no"}, sections={"http": http})
        )

    def start_agent(self, host: str, sensors: dict = SENSORS, heartbeat: float = 1) -> Daemon:
        conf = self.workdir / f"{host}.conf"
        lagent = {"heartbeat interval": heartbeat}
        conf.write_text(agent_ini(self.workdir, self.master_port, hostname=host, lagent=lagent, sensors=sensors))
        workdir = self.workdir / host
        workdir.mkdir(exist_ok=True)
        agent = Daemon("lagent", conf, workdir).start()
        self.agents[host] = agent
        return agent

    # -- HTTP ----------------------------------------------------------------------------------------

    def request(
        self, path: str, token: str | None = "", method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body or text); ``token`` "" means the current one, None none."""
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            sent = dict(headers or {})
            if token is not None:
                sent["Authorization"] = f"Bearer {token or self.token}"
            connection.request(method, path, headers=sent)
            response = connection.getresponse()
            raw = response.read()
            answer_headers = {key.lower(): value for key, value in response.getheaders()}
        finally:
            connection.close()
        if answer_headers.get("content-type", "").startswith("application/json"):
            return response.status, answer_headers, json.loads(raw)
        return response.status, answer_headers, raw.decode(errors="replace")

    def api(self, path: str, status: int = 200, template: str | None = None, **options: Any) -> Any:
        """The JSON body, after checking the status and the body against the served OpenAPI document."""
        got, headers, body = self.request(path, **options)
        assert got == status, (path, got, body)
        assert headers["content-type"].startswith("application/json"), headers
        template = template or path.split("?")[0]
        operation = self.document["paths"][template]["get"]
        assert str(status) in operation["responses"], f"{template} does not document {status}"
        schema = operation["responses"][str(status)]["content"]["application/json"].get("schema")
        if schema:
            jsonschema.Draft202012Validator({"components": self.document["components"], "allOf": [schema]}).validate(
                body
            )
        return body

    def nodes(self, query: str = "") -> dict[str, Any]:
        return self.api(f"/api/nodes{query}", template="/api/nodes")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("http-lmaster"))
    cluster.master.start(listen_port=cluster.http_port)
    try:
        status, _, document = cluster.request("/api/openapi.json")
        assert status == 200
        cluster.document = document
        for schema in document["components"]["schemas"].values():
            jsonschema.Draft202012Validator.check_schema(schema)
        for host in HOSTS:
            cluster.start_agent(host)
        wait_for(
            lambda: all(
                node["state"] == "up" and node["cpu_usage"] is not None and node["mem_usage"] is not None
                for node in cluster.nodes().values()
            ) and set(HOSTS) <= set(cluster.nodes()),
            30, "three agents up with values", describe=lambda: cluster.nodes(),
        )  # fmt: skip
        yield cluster
    finally:
        for agent in cluster.agents.values():
            agent.stop()
        cluster.master.stop()


def test_every_api_path_needs_the_token_and_refuses_it_in_the_query(cluster: Cluster) -> None:
    for path in API_PATHS:
        for token in (None, "wrong-token-0123456789abcdef"):
            body = cluster.api(path, 401, "/api/nodes", token=token)
            assert "token" in body["error"].lower()
        status, headers, _ = cluster.request(path, token=None)
        assert headers["www-authenticate"].startswith("Bearer")
        body = cluster.api(f"{path}?token={TOKEN}", 400, "/api/nodes", token=None)
        assert "URL" in body["error"]
    status, headers, page = cluster.request("/", token=None)  # the page itself asks for the token
    assert status == 200 and headers["content-type"].startswith("text/html") and "<html" in page.lower()


def test_nodes_carry_the_agents_facts(cluster: Cluster) -> None:
    nodes = cluster.nodes()
    assert set(HOSTS) <= set(nodes)
    memory = psutil.virtual_memory().total
    for host in HOSTS:
        node = nodes[host]
        assert node["hostname"] == host and node["state"] == "up"
        assert node["cpus"] == os.cpu_count()
        assert node["cpu"] == platform.machine() and node["system"] == platform.system()
        assert node["platform"] == platform.platform()
        assert node["memory_bytes"] == memory and node["gpus"] == []  # no GPU sensor, so NVML was never loaded
        assert abs(node["boot_time"] - psutil.boot_time()) < 2
        assert node["agent"] == f"lagent {__version__}" and node["ip_address"] == "127.0.0.1"
        assert node["sensors"] == {"CPUPercent": 1.0, "VirtualMemory": 1.0}
        assert node["heartbeat_interval"] == 1.0
        assert node["connected_since"] <= node["last_seen"] <= time.time() + 1
        assert 0 <= node["cpu_usage"] <= 100 and 0 < node["mem_usage"] < 100
    one = cluster.api("/api/nodes/node-b", template="/api/nodes/{host}")
    assert one == {**nodes["node-b"], **_moving(one)}


def _moving(node: dict[str, Any]) -> dict[str, Any]:
    """The fields that change from one second to the next."""
    return {key: node[key] for key in ("last_seen", "cpu_usage", "mem_usage")}


def test_group_by_every_attribute(cluster: Cluster) -> None:
    hosts = set(cluster.nodes())
    for attribute in GROUPABLE:
        groups = cluster.nodes(f"?group_by={attribute}")
        assert set().union(*(set(members) for members in groups.values())) == hosts, attribute
        for value, members in groups.items():
            for node in members.values():
                raw = node[attribute]
                shown = (", ".join(raw) or "none") if isinstance(raw, list) else raw
                assert value == ("unknown" if raw is None else str(shown)), (attribute, value, raw)
    assert set(cluster.nodes("?group_by=hostname")) == hosts
    assert cluster.nodes("?group_by=cpus").keys() == {str(os.cpu_count())}
    assert cluster.nodes("?group_by=gpus").keys() == {"none"}  # lists are joined; no GPU here
    assert set(cluster.nodes("?group_by=state&state=up")) == {"up"}
    body = cluster.api("/api/nodes?group_by=colour", 400, "/api/nodes")
    assert "'colour'" in body["error"]
    assert "'sleepy'" in cluster.api("/api/nodes?state=sleepy", 400, "/api/nodes")["error"]


def test_latest_history_and_not_found(cluster: Cluster) -> None:
    latest = cluster.api("/api/nodes/node-a/latest", template="/api/nodes/{host}/latest")
    assert {"node-a.CPUPercent.total", "node-a.VirtualMemory.percent"} <= set(latest)  # full Graphite paths
    assert all(path.startswith("node-a.") for path in latest)
    when, value = latest["node-a.VirtualMemory.percent"]
    assert abs(when - time.time()) < 30 and 0 < value < 100
    template = "/api/nodes/{host}/history"
    history = wait_for(
        lambda: cluster.api("/api/nodes/node-a/history?series=VirtualMemory.percent", template=template),
        10, "history of VirtualMemory.percent",
    )  # fmt: skip
    assert list(history) == ["node-a.VirtualMemory.percent"]
    series = history["node-a.VirtualMemory.percent"]
    assert len(series["times"]) == len(series["values"]) >= 1
    cluster.api("/api/nodes/node-a/history?series=a..b", 400, "/api/nodes/{host}/history")
    for suffix, template in (("", "/api/nodes/{host}"), ("/latest", "/api/nodes/{host}/latest"),
                             ("/history", "/api/nodes/{host}/history")):  # fmt: skip
        body = cluster.api(f"/api/nodes/nobody{suffix}", 404, template)
        assert "'nobody'" in body["error"]


def test_body_limit_method_and_connection_limit(cluster: Cluster) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=10)
    try:  # a body announced over the limit is refused from its header, before a byte of it is read
        connection.putrequest("POST", "/api/nodes")
        connection.putheader("Content-Length", str(2 << 20))
        connection.putheader("Authorization", f"Bearer {cluster.token}")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and "bytes" in json.loads(response.read())["error"]
    finally:
        connection.close()
    status, headers, body = cluster.request("/api/nodes", method="POST")
    assert status == 405 and "GET" in headers["allow"] and "POST" in body["error"]
    idle = []
    try:  # the limit counts open connections; the next one is answered 503 at accept
        for _ in range(MAX_CONNECTIONS):
            idle.append(socket.create_connection(("127.0.0.1", cluster.http_port), timeout=5))

        def refused() -> bool:
            status, _, body = cluster.request("/api/nodes")
            return status == 503 and "too many" in body["error"]

        wait_for(refused, 10, "503 over the connection limit")
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: cluster.request("/api/nodes")[0] == 200, 10, "200 again once connections closed")


def test_stopped_agent_is_late_and_killed_agent_down(cluster: Cluster) -> None:
    """late: connected, but nothing (no data, no heartbeat) for more than two heartbeat intervals; down: not
    connected. A SIGSTOPped agent keeps its connection and falls silent; a SIGKILLed one loses it."""
    agent = cluster.start_agent("node-x")
    state = lambda: cluster.nodes().get("node-x", {}).get("state")  # noqa: E731
    wait_for(lambda: state() == "up", 20, "node-x up")
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: state() == "late", 10, "node-x late while stopped")
        assert "node-x" in cluster.nodes("?state=late") and "node-x" not in cluster.nodes("?state=up")
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    wait_for(lambda: state() == "up", 10, "node-x up again")
    agent.kill()
    wait_for(lambda: state() == "down", 10, "node-x down once killed")
    down = cluster.nodes("?state=down")
    assert list(down) == ["node-x"] and down["node-x"]["cpus"] == os.cpu_count()  # facts outlive the connection
    assert set(cluster.nodes("?group_by=state")["up"]) == set(HOSTS)


def test_reload_applies_token_and_agents_report_new_intervals(cluster: Cluster) -> None:
    agent = cluster.start_agent("node-r", heartbeat=600)  # no regular heartbeat: the news must not wait for one
    sensors = lambda: cluster.nodes().get("node-r", {}).get("sensors")  # noqa: E731
    wait_for(lambda: sensors() == {"CPUPercent": 1.0, "VirtualMemory": 1.0}, 20, "node-r's intervals")
    conf = cluster.workdir / "node-r.conf"
    conf.write_text(
        conf.read_text().replace(
            "[sensor:VirtualMemory]\ntime_interval = 1", "[sensor:VirtualMemory]\ntime_interval = 3"
        )
    )
    os.kill(agent.pid, signal.SIGHUP)  # the agent stays connected and says so in a heartbeat
    wait_for(lambda: sensors() == {"CPUPercent": 1.0, "VirtualMemory": 3.0}, 15, "node-r's new interval")

    old, new = cluster.token, "renewed-" + "fedcba9876543210" * 2
    cluster.token_file.write_text(new + "\n")
    cluster.write_master_conf(max_connections=MAX_CONNECTIONS + 1)
    os.kill(cluster.master.pid, signal.SIGHUP)
    try:
        wait_for(lambda: cluster.request("/api/nodes", token=new)[0] == 200, 15, "new token accepted")
        cluster.api("/api/nodes", 401, token=old)
        wait_for_log(cluster.workdir / "lmaster.log", "[http] listen, TLS or limits takes effect at the next restart")
    finally:
        cluster.token = new
    assert "node-r" in cluster.nodes()
    cluster.write_master_conf(public_read="yes")  # a wall display: reading without the token
    os.kill(cluster.master.pid, signal.SIGHUP)
    try:
        wait_for(lambda: cluster.request("/api/nodes", token=None)[0] == 200, 15, "public read on")
        assert "node-r" in cluster.api("/api/nodes", token=None)
        assert cluster.request("/api/nodes", token=None, method="POST")[0] == 401  # reading only
    finally:
        cluster.write_master_conf()
        os.kill(cluster.master.pid, signal.SIGHUP)
    wait_for(lambda: cluster.request("/api/nodes", token=None)[0] == 401, 15, "public read off again")


def test_facts_are_checked_and_bounded() -> None:
    """lmaster keeps facts of the right type and range and ignores the rest, never failing the session."""
    hello = {
        "cpu": "x86_64", "cpus": 8, "memory_bytes": 2**35, "boot_time": 1.7e9, "system": "Linux", "platform": "P",
        "gpus": 2, "gpu_models": ["A100", "A100"], "colour": "blue",
        "sensors": {"CPUPercent": 10, "bad name!": 5, "Disk": -1, "Net": "fast"},
    }  # fmt: skip
    assert protocol.check_facts(hello) == {
        "cpu": "x86_64", "cpus": 8, "memory_bytes": 2**35, "boot_time": 1.7e9, "system": "Linux", "platform": "P",
        "gpus": 2, "gpu_models": ["A100", "A100"], "sensors": {"CPUPercent": 10.0},
    }  # fmt: skip
    wrong = {"cpu": 5, "cpus": -1, "memory_bytes": True, "boot_time": float("nan"), "system": "x" * 500,
             "platform": "\x00", "gpus": 1.5, "gpu_models": ["A100", 7], "sensors": list(range(3))}  # fmt: skip
    assert protocol.check_facts(wrong) == {} and protocol.check_facts("facts") == {}
    assert protocol.check_facts({"sensors": {f"S{n}": 1 for n in range(protocol.MAX_SENSORS + 1)}}) == {}
    beat = {"queued": 0, "spooled": 0, "sensors": {"CPUPercent": 2}, "gpus": 1, "gpu_models": ["H100"], "cpus": 99}
    assert protocol.heartbeat_facts(json.dumps(beat).encode()) == {
        "sensors": {"CPUPercent": 2.0}, "gpus": 1, "gpu_models": ["H100"]}  # fmt: skip
    assert gpu_models({"gpus": 2}) == ["unknown", "unknown"] and gpu_models({}) == []
    assert protocol.heartbeat_facts(b'{"queued": 3}') == {} and protocol.heartbeat_facts(b"[1") == {}
    assert protocol.heartbeat_facts(b'{"sensors": {}, "pad": "' + b"x" * protocol.MAX_HELLO + b'"}') == {}
    with pytest.raises(protocol.ProtocolError):  # the hello as a whole stays capped
        protocol.check_hello(json.dumps({"protocol": "fructosa", "version": 1, "host": "n1",
                                         "facts": {"platform": "x" * protocol.MAX_HELLO}}).encode())  # fmt: skip


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"listen": "127.0.0.1:99999"}, "[http] listen = '127.0.0.1:99999': not a TCP port (1-65535)"),
        ({"listen": "::1:8780"}, "write an IPv6 address in brackets, [::1]:8780"),
        ({"listen": "0.0.0.0:8780"}, "0.0.0.0 is reachable from other hosts: set a token file (or public read = yes)"),
        ({"token file": "/nonexistent/token"}, "[http] token file = '/nonexistent/token': No such file or directory"),
        ({"tls cert": "CONFIG"}, "[http] tls key"),
    ],
)
def test_check_names_file_section_key_and_value(tmp_path: Path, section: dict, expected: str) -> None:
    conf = tmp_path / "lmaster.conf"
    section = {key: str(conf) if value == "CONFIG" else value for key, value in section.items()}
    conf.write_text(master_ini(tmp_path, 7888, graphite={"enabled": "no"}, sections={"http": section}))
    result = subprocess.run([script("lmaster"), "-c", str(conf), "check"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and str(conf) in errors[0] and expected in errors[0], result.stderr


def test_world_readable_token_refused_and_busy_port_logged(tmp_path: Path) -> None:
    """A token file every user can read is refused at start; a taken HTTP port is logged and lmaster relays on."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o644)
    master_port, http_port = free_ports(2)
    conf = tmp_path / "lmaster.conf"
    section = {"listen": f"127.0.0.1:{http_port}", "token file": token}
    conf.write_text(master_ini(tmp_path, master_port, graphite={"enabled": "no"}, sections={"http": section}))
    result = subprocess.run([script("lmaster"), "-c", str(conf), "check"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "readable by every user (mode 644): chmod 600 it" in result.stderr
    token.chmod(0o600)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", http_port))
        taken.listen()
        with Daemon("lmaster", conf, tmp_path).start(listen_port=master_port) as master:
            wait_for_log(tmp_path / "lmaster.log", f"[http] listen = 127.0.0.1:{http_port}: cannot serve the HTTP API")
            assert master.running


def test_nodes_answers_are_reused_and_their_builds_bounded() -> None:
    """Many pollers cost one build per period; past the build budget older answers are served, never a stall."""
    now = [100.0]
    budget = BuildBudget(share=0.05, burst=0.1, clock=lambda: now[0])
    assert budget.available()
    budget.spend(0.2)  # one slow build (a very large cluster) overdraws the bucket
    assert not budget.available()
    now[0] += 1.0
    assert not budget.available()  # 0.05 s back of the 0.1 s owed
    now[0] += 2.0
    assert budget.available() and budget.credit == pytest.approx(0.05)

    nodes = StaticNodes([NodeRecord("n1", connected=True, last_seen=time.time())])
    settings = HttpSettings(token=TOKEN.encode(), nodes_cache_seconds=3600.0)
    app = make_app(settings, HttpState(nodes, LatestValues()))
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            first = await (await client.get("/api/nodes", headers=headers)).json()
            nodes.records["n2"] = NodeRecord("n2")
            again = await (await client.get("/api/nodes", headers=headers)).json()
            assert again == first and list(again) == ["n1"]  # the same answer, reused
            grouped = await (await client.get("/api/nodes?group_by=state", headers=headers)).json()
            assert set(grouped["down"]) == {"n2"}  # another query is another answer

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_https_with_tls_cert_and_key(tmp_path: Path) -> None:
    """tls cert and tls key serve the API over HTTPS, verifiable with the CA; plain HTTP is not answered."""
    try:
        pki = make_pki(tmp_path / "pki")
    except OpenSSLMissing as error:
        pytest.skip(str(error))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    master_port, http_port = free_ports(2)
    conf = tmp_path / "lmaster.conf"
    section = {"listen": f"127.0.0.1:{http_port}", "token file": token, "tls cert": pki.server.cert,
               "tls key": pki.server.key}  # fmt: skip
    conf.write_text(master_ini(tmp_path, master_port, graphite={"enabled": "no"}, sections={"http": section}))
    with Daemon("lmaster", conf, tmp_path).start(listen_port=master_port):
        wait_for(lambda: can_connect(http_port), 15, "HTTPS port open")
        context = ssl.create_default_context(cafile=str(pki.ca))
        connection = http.client.HTTPSConnection("127.0.0.1", http_port, timeout=10, context=context)
        try:
            connection.request("GET", "/api/nodes", headers={"Authorization": f"Bearer {TOKEN}"})
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read()) == {}
        finally:
            connection.close()
        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        try:
            with pytest.raises((http.client.HTTPException, OSError)):
                plain.request("GET", "/api/nodes")
                plain.getresponse()
        finally:
            plain.close()
        wait_for_log(tmp_path / "lmaster.log", f"HTTP API on https://127.0.0.1:{http_port}")


def test_gpus_come_from_nvml_only_once_the_gpu_sensor_loaded_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pynvml in the process: no GPUs, and nothing imports it; once loaded, its boards are counted and named."""
    monkeypatch.setattr(facts, "_found_gpus", None)
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    assert facts.gpu_facts() == {"gpus": 0, "gpu_models": []} and "pynvml" not in sys.modules
    nvml = types.ModuleType("pynvml")  # what the GPU sensor's NVML answers on a two-board node
    nvml.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda index: index  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda handle: b"NVIDIA H200"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    told = facts.hello_facts({"GPU": 10.0})
    assert protocol.check_facts(told) == told
    assert told["gpus"] == 2 and told["gpu_models"] == ["NVIDIA H200", "NVIDIA H200"]
    assert gpu_models(protocol.check_facts(told)) == ["NVIDIA H200", "NVIDIA H200"]
