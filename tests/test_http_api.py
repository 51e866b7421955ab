"""The HTTP API and page over a fake NodeSource and a real LatestValues fed real Blocks.

Every response is checked against the OpenAPI document the server itself serves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fructosa.http import server
from fructosa.http.app import make_app
from fructosa.http.nodes import GROUPABLE
from fructosa.http.settings import MIB, HttpSettings
from fructosa.http.state import HttpState, NodeRecord, StaticNodes
from fructosa.taps.latest import LatestValues
from fructosa.wire.blocks import Block

NOW = 1_800_000_000.0
TOKEN = b"s3cret-token-0123456789"
AUTH = {"Authorization": "Bearer " + TOKEN.decode()}
API_PATHS = ["/api/nodes", "/api/nodes/n01", "/api/nodes/n01/latest", "/api/nodes/n01/history", "/api/openapi.json"]


def records() -> list[NodeRecord]:
    common = dict(connected=True, heartbeat_interval=10.0, agent="lagent 0.4.0", system="Linux", cpus=4)
    return [
        NodeRecord("n01", "10.0.0.1", last_seen=NOW - 3, connected_since=NOW - 900, cpu="Xeon", memory_bytes=2**34,
                   boot_time=NOW - 86400, platform="Debian 12", sensors={"CPUPercent": 5.0}, gpus=["A100", "A100"],
                   **common),
        NodeRecord("n02", "10.0.0.2", last_seen=NOW - 25, platform="Debian 12", **common),
        NodeRecord("n03", "10.0.0.3", last_seen=NOW - 400, connected=False, agent="lagent 0.3.2"),
        NodeRecord("n04"),
    ]  # fmt: skip


def latest_store() -> LatestValues:
    store = LatestValues()
    for second in range(0, 60, 10):
        when = NOW - 60 + second
        store.observe(
            Block.of([
                ("n01.CPUPercent.0", (when, 20.0)), ("n01.CPUPercent.1", (when, 40.0)),
                ("n01.VirtualMemory.percent", (when, 55.5)), ("n01.DiskUsage.free", (when, 1e9)),
                ("n01.NetIOCounters.bytes_recv", (when, 1000.0 * second)),
            ]),
            "n01",
        )  # fmt: skip
    store.observe(Block.of([("n02.CPUPercent.total", (NOW - 30, 90.0))]), "n02")
    store.observe(Block.of([("ghost.CPUPercent.total", (NOW - 30, 1.0))]), "ghost")  # data, no agent entry
    return store


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 30) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout))


def with_client(test: Callable[[TestClient], Awaitable[None]], **settings: Any) -> None:
    settings.setdefault("token", TOKEN)
    app = make_app(HttpSettings(**settings), HttpState(StaticNodes(records()), latest_store(), clock=lambda: NOW))

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            await test(client)

    run(scenario)


_document: dict[str, Any] = {}


async def check(response: aiohttp.ClientResponse, status: int, template: str | None = None) -> Any:
    """The JSON body, after checking the status and that the OpenAPI document describes it."""
    body = await response.json(content_type=None)
    assert response.status == status, body
    assert response.headers["Content-Type"].startswith("application/json")
    if template is not None:
        operation = _document["paths"][template]["get"]
        assert str(status) in operation["responses"], f"{template} does not document {status}"
        schema = operation["responses"][str(status)]["content"]["application/json"].get("schema")
        if schema:
            root = {"components": _document["components"], "allOf": [schema]}
            jsonschema.Draft202012Validator(root).validate(body)
    return body


async def load_document(client: TestClient) -> None:
    response = await client.get("/api/openapi.json", headers=AUTH)
    assert response.status == 200
    _document.update(await response.json())
    for schema in _document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_openapi_documents_every_api_route():
    async def test(client: TestClient) -> None:
        await load_document(client)
        served = {
            resource.canonical for resource in client.app.router.resources() if resource.canonical.startswith("/api")
        }
        assert served == set(_document["paths"])
        for operation in _document["paths"].values():
            assert {"401", "400"} <= set(operation["get"]["responses"])

    with_client(test)


def test_every_api_path_refuses_missing_or_wrong_token(caplog):
    async def test(client: TestClient) -> None:
        await load_document(client)
        for path in API_PATHS + ["/api/nodes/nobody", "/api/unknown"]:
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token-0123456789"},
                {"Authorization": "Basic " + TOKEN.decode()},
            ):
                response = await client.get(path, headers=headers)
                body = await check(response, 401, "/api/nodes")
                assert "token" in body["error"].lower()
                assert response.headers["WWW-Authenticate"].startswith("Bearer")

    with caplog.at_level(logging.WARNING, logger="fructosa.http.middlewares"):
        with_client(test)
    refusals = [record for record in caplog.records if "refused" in record.getMessage()]
    assert len(refusals) == 1, "refusals from one peer are logged once a minute"


def test_token_in_query_string_is_refused_even_with_header():
    async def test(client: TestClient) -> None:
        await load_document(client)
        for query in ("token", "access_token", "api_key"):
            response = await client.get(f"/api/nodes?{query}={TOKEN.decode()}", headers=AUTH)
            body = await check(response, 400, "/api/nodes")
            assert "Authorization: Bearer" in body["error"] and "URL" in body["error"]

    with_client(test)


def test_public_read_lets_get_through_but_not_other_methods():
    async def test(client: TestClient) -> None:
        await load_document(client)
        for path in API_PATHS:
            assert (await client.get(path)).status == 200, path
        await check(await client.post("/api/nodes", data=b"{}"), 401)
        response = await client.delete("/api/nodes", headers=AUTH)
        body = await check(response, 405)
        assert "GET" in response.headers["Allow"] and "DELETE" in body["error"]

    with_client(test, public_read=True)


def test_nodes_list_fields_and_states():
    async def test(client: TestClient) -> None:
        await load_document(client)
        nodes = await check(await client.get("/api/nodes", headers=AUTH), 200, "/api/nodes")
        assert list(nodes) == ["n01", "n02", "n03", "n04"]
        assert {host: node["state"] for host, node in nodes.items()} == {
            "n01": "up", "n02": "late", "n03": "down", "n04": "down"}  # fmt: skip
        n01 = nodes["n01"]
        assert n01["cpu_usage"] == 30.0 and n01["mem_usage"] == 55.5  # mean of CPUPercent.0 and .1
        assert n01["gpus"] == ["A100", "A100"] and n01["sensors"] == {"CPUPercent": 5.0}
        assert n01["memory_bytes"] == 2**34 and n01["ip_address"] == "10.0.0.1"
        assert nodes["n02"]["cpu_usage"] == 90.0 and nodes["n02"]["mem_usage"] is None
        assert nodes["n04"]["cpu_usage"] is None and nodes["n04"]["last_seen"] is None
        for state, hosts in {"up": ["n01"], "late": ["n02"], "down": ["n03", "n04"]}.items():
            filtered = await check(await client.get(f"/api/nodes?state={state}", headers=AUTH), 200, "/api/nodes")
            assert list(filtered) == hosts
        body = await check(await client.get("/api/nodes?state=sleepy", headers=AUTH), 400, "/api/nodes")
        assert "up, late, down" in body["error"]
        assert await check(await client.get("/api/nodes?state=up&group_by=gpus", headers=AUTH), 200, "/api/nodes")
        body = await check(await client.get("/api/nodes?sort=cpu", headers=AUTH), 400, "/api/nodes")
        assert "sort" in body["error"]

    with_client(test)


def test_group_by_every_attribute():
    async def test(client: TestClient) -> None:
        await load_document(client)
        everything = await (await client.get("/api/nodes", headers=AUTH)).json()
        for attribute in GROUPABLE:
            groups = await check(await client.get(f"/api/nodes?group_by={attribute}", headers=AUTH), 200, "/api/nodes")
            regrouped = {host: node for members in groups.values() for host, node in members.items()}
            assert regrouped == everything, attribute
            for value, members in groups.items():
                for node in members.values():
                    raw = node[attribute]
                    shown = ", ".join(raw) if isinstance(raw, list) and raw else "none" if raw == [] else raw
                    assert value == ("unknown" if raw is None else str(shown)), (attribute, value, raw)
        groups = await check(await client.get("/api/nodes?group_by=platform&state=late", headers=AUTH), 200)
        assert groups == {"Debian 12": {"n02": everything["n02"]}}
        assert set(groups) == {"Debian 12"}
        grouped = await (await client.get("/api/nodes?group_by=gpus", headers=AUTH)).json()
        assert set(grouped) == {"A100, A100", "none"}
        body = await check(await client.get("/api/nodes?group_by=colour", headers=AUTH), 400, "/api/nodes")
        assert "'colour'" in body["error"] and all(attribute in body["error"] for attribute in GROUPABLE)

    with_client(test)


def test_one_node_latest_and_history():
    async def test(client: TestClient) -> None:
        await load_document(client)
        node = await check(await client.get("/api/nodes/n01", headers=AUTH), 200, "/api/nodes/{host}")
        assert node["hostname"] == "n01" and node["state"] == "up"
        ghost = await check(await client.get("/api/nodes/ghost", headers=AUTH), 200, "/api/nodes/{host}")
        assert ghost["state"] == "down" and ghost["cpu_usage"] == 1.0
        for path in ("/api/nodes/nobody", "/api/nodes/nobody/latest", "/api/nodes/nobody/history"):
            template = path.replace("nobody", "{host}")
            body = await check(await client.get(path, headers=AUTH), 404, template)
            assert "nobody" in body["error"]
        latest = await check(await client.get("/api/nodes/n01/latest", headers=AUTH), 200, "/api/nodes/{host}/latest")
        assert latest["n01.VirtualMemory.percent"] == [NOW - 10, 55.5] and len(latest) == 5
        assert await (await client.get("/api/nodes/n04/latest", headers=AUTH)).json() == {}
        history = await check(
            await client.get("/api/nodes/n01/history", headers=AUTH), 200, "/api/nodes/{host}/history"
        )
        assert "n01.DiskUsage.free" not in history  # not a main series
        assert history["n01.NetIOCounters.bytes_recv"]["values"] == [0.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0]
        cpus = await check(
            await client.get("/api/nodes/n01/history?series=CPUPercent.*", headers=AUTH),
            200,
            "/api/nodes/{host}/history",
        )
        assert set(cpus) == {"n01.CPUPercent.0", "n01.CPUPercent.1"} and len(cpus["n01.CPUPercent.0"]["times"]) == 6
        for bad in ("CPU..x", "a/b", "x" * 201, "", "**.a.**", "*" * 60, "job_*.rss"):
            body = await check(
                await client.get("/api/nodes/n01/history", params={"series": bad}, headers=AUTH), 400,
                "/api/nodes/{host}/history",
            )  # fmt: skip
            assert "series" in body["error"]

    with_client(test)


def test_body_over_one_mebibyte_is_413_and_errors_are_json():
    async def test(client: TestClient) -> None:
        await load_document(client)
        body = await check(await client.post("/api/nodes", data=b"x" * (MIB + 1), headers=AUTH), 413, "/api/nodes")
        assert str(MIB) in body["error"]
        await check(await client.post("/api/nodes", data=b"x" * MIB, headers=AUTH), 405, "/api/nodes")
        body = await check(await client.get("/no/such/page"), 404)
        assert "/no/such/page" in body["error"]
        await check(await client.get("/api/unknown", headers=AUTH), 404)

    with_client(test)


async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """Send the request line exactly as given (client libraries would normalise it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    status_line = data.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), data


TRAVERSALS = [
    "/static/../app.py", "/static/%2e%2e/app.py", "/static/%2E%2E/%2E%2E/setup.cfg", "/static/..%2fapp.py",
    "/static/vendor%2f..%2f..%2fapp.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/..%5capp.py",
    "/static/vendor/../../app.py", "/static/./app.js", "/static/vendor/uplot/../../../nodes.py",
    "/static/%252e%252e/app.py", "/static/app.js%00.css", "/static/C:/Windows/win.ini", "/static/",
]  # fmt: skip


def test_page_and_static_files_without_traversal():
    async def test(client: TestClient) -> None:
        page = await client.get("/")
        assert page.status == 200 and '<table id="nodes">' in await page.text()
        assert (
            page.headers["Cache-Control"] == "no-cache"
            and "default-src 'self'" in page.headers["Content-Security-Policy"]
        )
        script = await client.get("/static/app.js")
        assert script.status == 200 and script.headers["Cache-Control"] == "no-cache"
        again = await client.get("/static/app.js", headers={"If-None-Match": script.headers["ETag"]})
        assert again.status == 304
        vendor = await client.get("/static/vendor/uplot/uPlot.iife.min.js")
        assert vendor.status == 200 and "max-age=86400" in vendor.headers["Cache-Control"]
        assert (await client.get("/static/vendor/uplot/uPlot.min.css")).status == 200
        port = client.server.port
        for target in TRAVERSALS:
            status, data = await raw_get(port, target)
            assert status == 404, (target, data[:300])
            assert b'"error"' in data and b"import" not in data and b"[metadata]" not in data

    with_client(test)


def test_idle_connections_do_not_delay_requests_and_limits_hold():
    settings = HttpSettings(listen=(("127.0.0.1", 0),), token=TOKEN, max_connections=260, request_timeout=1.0)
    app = make_app(settings, HttpState(StaticNodes(records()), latest_store(), clock=lambda: NOW))

    async def scenario() -> None:
        runner, sites = await server.start(app)
        port = sites[0].port
        idle = []
        try:
            for _ in range(200):
                idle.append(await asyncio.open_connection("127.0.0.1", port))
            idle[0][1].write(b"GET /api/nodes HTTP/1.1\r\nHost: x\r\n")  # headers that never end
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                async with session.get(f"http://127.0.0.1:{port}/api/nodes", headers=AUTH) as response:
                    assert response.status == 200 and len(await response.json()) == 4
                assert time.monotonic() - started < 2.0, "200 idle connections slowed a request down"
            for reader, _ in idle:  # silent clients are cut after request_timeout
                assert await asyncio.wait_for(reader.read(), 10) == b""
            assert app[server.GUARD].cut_slow == 200
        finally:
            for _, writer in idle:
                writer.close()
            await runner.cleanup()

    run(scenario)


def test_idle_keep_alive_connections_are_closed():
    settings = HttpSettings(listen=(("127.0.0.1", 0),), idle_timeout=0.5)
    app = make_app(settings, HttpState(StaticNodes(records()), latest_store(), clock=lambda: NOW))

    async def scenario() -> None:
        runner, sites = await server.start(app)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", sites[0].port)
            writer.write(b"GET /api/nodes?state=up HTTP/1.1\r\nHost: x\r\n\r\n")
            status_line = await asyncio.wait_for(reader.readline(), 5)
            assert status_line.startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            while await asyncio.wait_for(reader.read(65536), 10):
                pass  # the rest of the response, then EOF when the idle timeout closes the connection
            assert time.monotonic() - started < 5
            writer.close()
        finally:
            await runner.cleanup()

    run(scenario)


def test_connections_over_the_limit_get_503_at_accept():
    settings = HttpSettings(listen=(("127.0.0.1", 0),), token=TOKEN, max_connections=3, request_timeout=30.0)
    app = make_app(settings, HttpState(StaticNodes(records()), latest_store(), clock=lambda: NOW))

    async def scenario() -> None:
        runner, sites = await server.start(app)
        port = sites[0].port
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        try:
            deadline = time.monotonic() + 5
            while len(runner.server.connections) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            status, data = await raw_get(port, "/api/nodes")
            assert status == 503
            head, body = data.split(b"\r\n\r\n", 1)
            assert (
                f"Content-Length: {len(body)}".encode() in head
                and json.loads(body)["error"] == "too many open connections"
            )
            assert app[server.GUARD].refused == 1
            for _, writer in held:
                writer.close()
            deadline = time.monotonic() + 5
            while runner.server.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert (await raw_get(port, "/"))[0] == 200
        finally:
            for _, writer in held:
                writer.close()
            await runner.cleanup()

    run(scenario)


def test_settings_refuse_nonsense():
    for bad in (dict(max_connections=0), dict(token=b"short"), dict(listen=(("::", 70000),)), dict(max_body=-1)):
        with pytest.raises(ValueError):
            HttpSettings(**bad)


def test_internal_errors_are_json_without_traceback():
    class Broken(StaticNodes):
        def nodes(self):
            raise RuntimeError("secret detail")

    app = make_app(HttpSettings(), HttpState(Broken(), LatestValues(), clock=lambda: NOW))

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/api/nodes")
            body = await response.json()
            assert response.status == 500 and "secret" not in body["error"] and "Traceback" not in body["error"]

    run(scenario)


def test_server_module_exports_guard_key():
    assert isinstance(server.GUARD, web.AppKey)
