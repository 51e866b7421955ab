"""The live stream: Graphite globs against graphite-web itself, the hub fed real blocks, the WebSocket, fructosa-tail.

Glob semantics are checked against graphite-web 1.1.10's own code: its
per-component ``match_entries`` and its ``StandardFinder`` walking a real
whisper directory tree (for ``**`` and the split at dots). The endpoint runs
in aiohttp's TestServer with the real app (``make_app`` + ``add_stream_routes``);
``fructosa-tail`` runs as the installed console script against it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fructosa.http import stream as stream_http
from fructosa.http.app import make_app
from fructosa.http.settings import HttpSettings
from fructosa.http.state import HttpState, StaticNodes
from fructosa.http.stream import add_stream_routes
from fructosa.taps.graphite_glob import PatternError, _Component, compile_pattern, expand_braces
from fructosa.taps.latest import LatestValues
from fructosa.taps.stream import StreamFull, StreamHub, StreamLimits
from fructosa.wire.blocks import Block

graphite_finders = pytest.importorskip("graphite.finders", reason="graphite-web 1.1.10 is in .[test]")

pytestmark = pytest.mark.timeout(120)

NOW = 1_800_000_000.0
TOKEN = b"stream-token-0123456789"
AUTH = {"Authorization": "Bearer " + TOKEN.decode()}


def block(*points: tuple[str, float], when: float = NOW) -> Block:
    return Block.of([(path, (when, value)) for path, value in points])


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout))


async def eventually(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


# -- globs, against graphite-web ---------------------------------------------------------------------------

NAME_CHARACTERS = "abw-_1"
component_names = st.text(NAME_CHARACTERS, min_size=1, max_size=6)
glob_texts = st.text(NAME_CHARACTERS + "*?[]!-{},", min_size=1, max_size=12)


@settings(max_examples=600, deadline=None)
@given(glob_texts, st.lists(component_names, min_size=1, max_size=12))
def test_component_glob_matches_like_graphite_web(pattern, names):
    assert expand_braces(pattern) == set(graphite_finders.expand_braces(pattern))
    assume("**" not in expand_braces(pattern))  # ** spans components: the finder test below covers it
    component = _Component(pattern)
    expected = set(graphite_finders.match_entries(names, pattern))
    assert {name for name in names if component.matches(name)} == expected


UNIVERSE = sorted(
    {
        f"{host}.{sensor}"
        for host in ("n01", "n02", "n1", "gpu-a", "w_x")
        for sensor in (
            "CPUPercent.0",
            "CPUPercent.1",
            "CPUPercent.total",
            "VirtualMemory.percent",
            "w",
            "wsp",
            "a.b.w",
            "a.w",
            "SlurmJobs.12.cpu_percent",
        )
    }
)
PIECES = ["n01", "n0?", "n*", "*", "**", "?", "[gn]*", "[!n]*", "{n01,n02}", "{n0{1,2},w_x}", "CPUPercent", "C*",
          "*w", "w", "a", "b", "{a,b}", "*.*", "[0-9]", "{0,total}", "{**,a}", "*_*", "[a-"]  # fmt: skip


@pytest.fixture(scope="module")
def graphite_finder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], set[str]]]:
    """graphite-web's StandardFinder over a whisper tree holding UNIVERSE (empty .wsp files)."""
    storage = tmp_path_factory.mktemp("graphite")
    (storage / "log" / "webapp").mkdir(parents=True)
    root = storage / "whisper"
    for path in UNIVERSE:
        leaf = root.joinpath(*path.split(".")).with_suffix(".wsp")
        leaf.parent.mkdir(parents=True, exist_ok=True)
        leaf.touch()
    with pytest.MonkeyPatch.context() as patch:  # graphite-web reads these once, at import
        patch.setenv("GRAPHITE_STORAGE_DIR", str(storage))
        patch.setenv("DJANGO_SETTINGS_MODULE", "graphite.settings")
        from graphite.finders.standard import StandardFinder
    finder = StandardFinder([str(root)])

    def find(pattern: str) -> set[str]:
        found = finder._find_paths(str(root), pattern.split("."))
        return {relative[: -len(".wsp")].replace(os.sep, ".") for relative in found if relative.endswith(".wsp")}

    yield find


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=5))
def test_path_glob_matches_like_graphite_webs_finder(graphite_finder, pieces):
    pattern = ".".join(pieces)
    last = expand_braces(pattern.split(".")[-1])
    assume(not ("**" in last and len(last) > 1))  # graphite-web's result then depends on set iteration order
    compiled = compile_pattern(pattern)
    assert {path for path in UNIVERSE if compiled.matches(path)} == graphite_finder(pattern), pattern


def test_globstar_spans_components_like_graphite():
    assert compile_pattern("n01.**").matches("n01.a.b.w")
    assert not compile_pattern("n01.**").matches("n01")  # a final ** takes at least one component
    assert compile_pattern("n01.**.w").matches("n01.w")  # a middle ** may take none
    assert compile_pattern("**.total").matches("n02.CPUPercent.total")


@pytest.mark.parametrize(
    "pattern",
    [
        "*a" * 200 + "b",
        "{a,b}" * 20,
        "{" * 200 + "a" + "}" * 200,
        "[" * 500,
        "**." * 150 + "x",
        "{a,{b,{c,{d,e}}}}" * 20,
    ],
)
def test_hostile_patterns_compile_or_fail_fast(pattern):
    started = time.thread_time()  # CPU time: a loaded machine preempting this test must not fail it
    try:
        compiled = compile_pattern(pattern[:512])
    except PatternError as error:
        assert str(error)
    else:
        long_path = ".".join(["a" * 200] * 10)
        compiled.matches(long_path)
        compiled.matches("a." * 100 + "x")
    assert time.thread_time() - started < 0.5, pattern[:40]


def test_bad_patterns_are_refused_with_one_line():
    for pattern, why in [("", "empty"), ("x" * 513, "at most 512"), ("a.b\n", "printable"), ("é", "ASCII")]:
        with pytest.raises(PatternError, match=why):
            compile_pattern(pattern)


# -- the hub, fed blocks directly ---------------------------------------------------------------------------


def datapoints_of(subscriber) -> list[tuple]:
    return [item for item in subscriber.take()[1] if isinstance(item, tuple)]


def test_hub_queues_only_matching_datapoints():
    hub = StreamHub()
    cpu, memory = hub.connect(), hub.connect()
    hub.subscribe(cpu, ["n0[12].CPUPercent.*"])
    hub.subscribe(memory, ["*.VirtualMemory.{percent,used}"])
    cpu.take(), memory.take()
    hub.observe(block(("n01.CPUPercent.0", 5.0), ("n01.VirtualMemory.percent", 50.0), ("n03.CPUPercent.0", 7.0)), "n01")
    hub.observe(block(("n02.CPUPercent.total", 9.0)), "n02")
    assert datapoints_of(cpu) == [("n01.CPUPercent.0", NOW, 5.0), ("n02.CPUPercent.total", NOW, 9.0)]
    assert datapoints_of(memory) == [("n01.VirtualMemory.percent", NOW, 50.0)]
    hub.observe(block(("lmaster.agents", 3.0)), None)  # lmaster's own datapoints: host None
    assert datapoints_of(cpu) == datapoints_of(memory) == []


def test_hub_costs_nothing_without_listeners():
    hub = StreamHub()
    idle = hub.connect()  # connected, but no pattern yet
    big = Block.of([(f"n01.Sensor{index}.value", (NOW, float(index))) for index in range(500)])
    started = time.thread_time()  # CPU time: preemption on a loaded machine is not the hub's cost
    for _ in range(10_000):
        hub.observe(big, "n01")
    per_block = (time.thread_time() - started) / 10_000
    assert hub.matched_paths == 0 and not idle.queue
    assert per_block < 20e-6, f"{per_block * 1e6:.1f} µs per block with nobody listening"


def test_hub_drops_oldest_and_counts():
    hub = StreamHub(limits=StreamLimits(queue_size=5))
    slow = hub.connect()
    hub.subscribe(slow, ["n01.*"])
    slow.take()
    for second in range(8):
        hub.observe(block(("n01.x", float(second)), when=NOW + second), "n01")
    dropped, items = slow.take()
    assert dropped == 3
    assert [value for _, _, value in items] == [3.0, 4.0, 5.0, 6.0, 7.0]
    hub.observe(block(("n01.x", 9.0)), "n01")
    assert slow.take()[0] == 0  # told once
    hub.observe(Block.of([(f"n01.s{index}", (NOW, 1.0)) for index in range(12)]), "n01")
    dropped, items = slow.take()
    assert (dropped, len(items), items[-1][0]) == (7, 5, "n01.s11")


def test_hub_caches_matches_and_invalidates_on_subscription_changes():
    hub = StreamHub()
    first, second = hub.connect(), hub.connect()
    hub.subscribe(first, ["n01.*"])
    two = block(("n01.a", 1.0), ("n01.b", 2.0))
    hub.observe(two, "n01")
    misses = hub.matched_paths
    assert misses == 2
    hub.observe(block(("n01.a", 3.0), ("n01.b", 4.0)), "n01")  # same layout, new values: no matching at all
    assert hub.matched_paths == misses
    hub.subscribe(second, ["n01.b"])
    first.take(), second.take()
    hub.observe(two, "n01")
    assert hub.matched_paths > misses
    assert datapoints_of(second) == [("n01.b", NOW, 2.0)]
    hub.unsubscribe(first, ["n01.*", "never-held"])
    first.take()
    hub.observe(two, "n01")
    assert datapoints_of(first) == [] and datapoints_of(second) == [("n01.b", NOW, 2.0)]
    hub.disconnect(second)
    hub.observe(two, "n01")
    assert hub.stats()["listening"] == 0 and hub.stats()["cached_layouts"] == 0


def test_hub_caches_are_bounded():
    hub = StreamHub(limits=StreamLimits(layout_cache=3, path_cache=10))
    hub.subscribe(hub.connect(), ["**"])
    for index in range(50):
        hub.observe(block((f"n{index}.a", 1.0), (f"n{index}.b", 2.0)), f"n{index}")
    assert hub.stats()["cached_layouts"] == 3 and hub.stats()["cached_paths"] == 10


def test_late_joiner_gets_current_values_first_and_events_reach_everyone():
    latest = LatestValues()
    latest.observe(block(("n01.CPUPercent.0", 5.0), ("n01.DiskUsage.free", 1e9)), "n01")
    latest.observe(block(("n02.CPUPercent.0", 8.0)), "n02")
    hub = StreamHub(latest)
    late = hub.connect()
    assert hub.subscribe(late, ["*.CPUPercent.*"]) == ["*.CPUPercent.*"]
    hub.observe(block(("n01.CPUPercent.0", 6.0), when=NOW + 10), "n01")
    hub.publish_event({"agent": "n03", "state": "connected"})
    assert late.take()[1] == [
        ("n01.CPUPercent.0", NOW, 5.0, True),
        ("n02.CPUPercent.0", NOW, 8.0, True),
        {"subscribed": ["*.CPUPercent.*"]},
        ("n01.CPUPercent.0", NOW + 10, 6.0),
        {"event": {"agent": "n03", "state": "connected"}},
    ]


def test_current_values_by_lookup_equal_those_by_scan_and_a_big_scan_yields_to_the_loop():
    latest = LatestValues()
    for number in range(300):
        host = f"n{number:03d}"
        latest.observe(
            Block.of([(f"{host}.S{index // 10}.v{index % 10}", (NOW, float(index))) for index in range(200)]), host
        )
    hub = StreamHub(latest)
    looked_up = hub.current_values([compile_pattern("n0{0,1}?.S{1,2}.v4")])  # a get per series: no scan
    scanned = hub.current_values([compile_pattern("n0{0,1}?.S{1,2}.v[4]")])  # [4] is a wildcard: a scan
    assert looked_up == scanned and len(looked_up) == 20 * 2
    assert looked_up[:2] == [("n000.S1.v4", NOW, 14.0, True), ("n000.S2.v4", NOW, 24.0, True)]

    async def scenario() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        client = hub.connect()
        await hub.subscribe_async(client, ["*.S1.v[0-9]", "*.nothing.*"])  # 60,000 series looked at
        assert ticks - before >= 2, "the scan held the event loop"
        ticking.cancel()
        dropped, items = client.take()
        assert (
            dropped == 0 and len(items) == 300 * 10 + 1 and items[-1] == {"subscribed": ["*.S1.v[0-9]", "*.nothing.*"]}
        )

    run(scenario)


def test_hub_limits():
    hub = StreamHub(limits=StreamLimits(max_clients=2, max_patterns=3, max_pattern_length=20))
    client = hub.connect()
    hub.connect()
    with pytest.raises(StreamFull):
        hub.connect()
    with pytest.raises(PatternError, match="at most 3 patterns"):
        hub.subscribe(client, ["a", "b", "c", "d"])
    hub.subscribe(client, ["a", "b"])
    with pytest.raises(PatternError, match="at most 3 patterns per client, not 4"):
        hub.subscribe(client, ["c", "d"])
    with pytest.raises(PatternError, match="at most 20 characters"):
        hub.subscribe(client, ["x" * 21])
    with pytest.raises(PatternError, match="list of pattern strings"):
        hub.subscribe(client, "a.*")
    assert sorted(client.patterns) == ["a", "b"]  # refused requests changed nothing


# -- the WebSocket endpoint -----------------------------------------------------------------------------------


def stream_app(hub: StreamHub, **settings: Any):
    settings.setdefault("token", TOKEN)
    app = make_app(HttpSettings(**settings), HttpState(StaticNodes(), hub.latest or LatestValues()))
    add_stream_routes(app, hub)
    return app


def with_stream(test: Callable[[TestClient, StreamHub], Awaitable[None]], hub: StreamHub | None = None, **kw) -> None:
    hub = hub or StreamHub(LatestValues())

    async def scenario() -> None:
        async with TestClient(TestServer(stream_app(hub, **kw))) as client:
            await test(client, hub)

    run(scenario)


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> dict[str, Any]:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def receive_until(ws: aiohttp.ClientWebSocketResponse, key: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Messages up to and including the first with ``key``."""
    seen = []
    deadline = time.monotonic() + timeout
    while not seen or key not in seen[-1]:
        seen.append(await receive(ws, max(deadline - time.monotonic(), 0.01)))
    return seen


def test_subscribe_and_unsubscribe_on_the_fly_with_current_values_first():
    latest = LatestValues()
    latest.observe(block(("n01.CPUPercent.0", 5.0), ("n01.VirtualMemory.percent", 40.0)), "n01")

    async def test(client: TestClient, hub: StreamHub) -> None:
        async with client.ws_connect("/api/stream", headers=AUTH) as ws:
            await ws.send_json({"subscribe": ["n01.CPUPercent.*"]})
            assert await receive_until(ws, "subscribed") == [
                {"current": [["n01.CPUPercent.0", NOW, 5.0]]},
                {"subscribed": ["n01.CPUPercent.*"]},
            ]
            hub.observe(block(("n01.CPUPercent.0", 6.0), ("n01.VirtualMemory.percent", 41.0), when=NOW + 1), "n01")
            assert await receive(ws) == {"datapoints": [["n01.CPUPercent.0", NOW + 1, 6.0]]}
            await ws.send_json({"subscribe": ["n01.VirtualMemory.*"]})
            assert (await receive_until(ws, "subscribed"))[-1] == {
                "subscribed": ["n01.CPUPercent.*", "n01.VirtualMemory.*"]
            }
            await ws.send_json({"unsubscribe": ["n01.CPUPercent.*"]})
            assert await receive(ws) == {"unsubscribed": ["n01.CPUPercent.*"], "subscribed": ["n01.VirtualMemory.*"]}
            hub.observe(block(("n01.CPUPercent.0", 7.0), ("n01.VirtualMemory.percent", 42.0), when=NOW + 2), "n01")
            assert await receive(ws) == {"datapoints": [["n01.VirtualMemory.percent", NOW + 2, 42.0]]}
            hub.publish_event({"job": 42, "state": "started"})
            assert await receive(ws) == {"event": {"job": 42, "state": "started"}}
        await eventually(lambda: hub.stats()["clients"] == 0, what="the hub to forget the client")

    with_stream(test, StreamHub(latest))


def test_bad_messages_get_an_error_and_the_connection_stays_open():
    async def test(client: TestClient, hub: StreamHub) -> None:
        async with client.ws_connect("/api/stream", headers=AUTH) as ws:
            for bad, why in [
                ("{not json", "not JSON"),
                ("[1, 2]", "send {"),
                ('{"subscribe": "n01.*"}', "list of pattern strings"),
                ('{"subscribe": [1]}', "list of pattern strings"),
                ('{"subscribe": ["a"], "unsubscribe": ["b"]}', "send {"),
                ('{"subscribe": ["' + "x" * 600 + '"]}', "at most 512 characters"),
                ('{"subscribe": ["{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}"]}', "brace alternatives"),
            ]:
                await ws.send_str(bad)
                assert why in (await receive(ws))["error"]
            await ws.send_bytes(b"\x00\x01")
            assert "binary" in (await receive(ws))["error"]
            await ws.send_json({"subscribe": ["n01.*"]})
            assert await receive(ws) == {"subscribed": ["n01.*"]}

    with_stream(test)


def test_too_many_patterns_are_refused_quickly():
    async def test(client: TestClient, hub: StreamHub) -> None:
        async with client.ws_connect("/api/stream", headers=AUTH) as ws:
            started = time.process_time()  # the server runs in this process: its CPU time, not a loaded machine's
            ten_thousand = [chr(ord("a") + index % 26) for index in range(10_000)]  # 50 KB: under the 64 KiB limit
            await ws.send_json({"subscribe": ten_thousand})
            assert "at most 100 patterns" in (await receive(ws))["error"]
            hostile = ["*a" * 100 + "b", "{" * 100 + "a" + "}" * 100, "**." * 100 + "x", "[" * 400]
            await ws.send_json({"subscribe": hostile})
            assert await receive(ws) == {"subscribed": sorted(hostile)}
            hub.observe(Block.of([(".".join(["a" * 199] * 10), (NOW, 1.0))]), "a")
            await ws.send_json({"unsubscribe": hostile})
            await receive(ws)
            assert time.process_time() - started < 2.0
            assert hub.stats()["patterns"] == 0

    with_stream(test)


def test_a_message_over_64_kib_closes_the_connection():
    async def test(client: TestClient, hub: StreamHub) -> None:
        async with client.ws_connect("/api/stream", headers=AUTH) as ws:
            await ws.send_str(json.dumps({"subscribe": ["x" * 70_000]}))
            message = await ws.receive(timeout=5)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await eventually(lambda: hub.stats()["clients"] == 0, what="the hub to forget the client")

    with_stream(test)


def test_token_by_header_or_first_message(monkeypatch):
    monkeypatch.setattr(stream_http, "TOKEN_WAIT", 0.5)

    async def test(client: TestClient, hub: StreamHub) -> None:
        response = await client.get("/api/stream", headers={"Authorization": "Bearer wrong-token-0123456789"})
        assert response.status == 401
        response = await client.get("/api/stream", headers=AUTH)
        assert response.status == 400 and "WebSocket" in (await response.json())["error"]
        async with client.ws_connect("/api/stream") as ws:  # a browser: the token comes as the first message
            await ws.send_json({"token": TOKEN.decode()})
            await ws.send_json({"subscribe": ["n01.x"]})
            assert await receive(ws) == {"subscribed": ["n01.x"]}
        for first in ({"token": "wrong-token-0123456789"}, {"subscribe": ["n01.x"]}):
            async with client.ws_connect("/api/stream") as ws:
                await ws.send_json(first)
                assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
                assert ws.close_code == 1008
        async with client.ws_connect("/api/stream") as ws:
            started = time.monotonic()
            assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1008 and time.monotonic() - started < 3
        assert hub.stats()["clients"] == 0

    with_stream(test)


def test_client_limit_answers_503():
    async def test(client: TestClient, hub: StreamHub) -> None:
        async with client.ws_connect("/api/stream", headers=AUTH):
            await eventually(lambda: hub.stats()["clients"] == 1, what="the first client")
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect("/api/stream", headers=AUTH)
            assert refused.value.status == 503

    with_stream(test, StreamHub(limits=StreamLimits(max_clients=1)))


def test_openapi_documents_the_stream_when_it_is_served():
    async def test(client: TestClient, hub: StreamHub) -> None:
        document = await (await client.get("/api/openapi.json", headers=AUTH)).json()
        served = {resource.canonical for resource in client.app.router.resources() if resource.canonical[:4] == "/api"}
        assert "/api/stream" in served and served == set(document["paths"])
        assert "subscribe" in document["paths"]["/api/stream"]["get"]["description"]

    with_stream(test)


def test_a_stalled_client_neither_slows_the_relay_nor_a_fast_client():
    hub = StreamHub(limits=StreamLimits(queue_size=2000))  # two blocks of the flood below

    async def test(client: TestClient, hub: StreamHub) -> None:
        async with (
            client.ws_connect("/api/stream", headers=AUTH) as stalled,
            client.ws_connect("/api/stream", headers=AUTH) as fast,
        ):
            await stalled.send_json({"subscribe": ["**"]})
            await fast.send_json({"subscribe": ["marker.*"]})
            assert await receive(stalled) == {"subscribed": ["**"]}
            assert await receive(fast) == {"subscribed": ["marker.*"]}
            flood = Block.of([(f"n{index:04d}.CPUPercent.{index % 8}", (NOW, 1.5)) for index in range(1000)])
            slowest, blocks = 0.0, 0
            deadline = time.monotonic() + 30
            while hub.stats()["dropped"] == 0:  # until the stalled client's socket and queue are full
                assert time.monotonic() < deadline, "the stalled client never lost anything"
                started = time.thread_time()  # its CPU time: a loaded machine may hold the thread up, not the hub
                hub.observe(flood, None)  # half a queue per turn of the loop: only a client that stalls loses any
                slowest = max(slowest, time.thread_time() - started)
                blocks += 1
                await asyncio.sleep(0.001)
            assert blocks > 5, "the stalled client lost datapoints before its socket could fill"
            assert slowest < 0.05, f"observe took {slowest * 1000:.1f} ms with a stalled client"
            for second in range(3):
                sent = time.monotonic()
                hub.observe(block((f"marker.m{second}", float(second))), None)
                assert await receive(fast, timeout=1.0) == {"datapoints": [[f"marker.m{second}", NOW, float(second)]]}
                assert time.monotonic() - sent < 1.0
            told = 0
            deadline = time.monotonic() + 20
            while not told:  # the stalled client reads again: what it missed is counted
                told = (await receive(stalled, max(deadline - time.monotonic(), 0.01))).get("dropped", 0)
            assert told > 0

    with_stream(test, hub)


def test_shutdown_closes_streams_without_waiting_for_stalled_clients():
    hub = StreamHub(limits=StreamLimits(queue_size=2000))

    async def scenario() -> None:
        server = TestServer(stream_app(hub))
        client = TestClient(server)
        await client.start_server()
        try:
            stalled = await client.ws_connect("/api/stream", headers=AUTH)
            polite = await client.ws_connect("/api/stream", headers=AUTH)
            await stalled.send_json({"subscribe": ["**"]})
            await eventually(lambda: hub.stats()["listening"] == 1, what="the subscription")
            flood = Block.of([(f"n{index:04d}.x", (NOW, 1.0)) for index in range(1000)])
            deadline = time.monotonic() + 30
            while hub.stats()["dropped"] == 0:
                assert time.monotonic() < deadline, "the stalled client never lost anything"
                hub.observe(flood, None)
                await asyncio.sleep(0.001)
            started = time.monotonic()
            await server.close()  # what lmaster's stop does: runner.cleanup()
            assert time.monotonic() - started < stream_http.CLOSE_WAIT + 3
            message = await polite.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == aiohttp.WSCloseCode.GOING_AWAY
            assert hub.stats()["clients"] == 0
        finally:
            await client.close()

    run(scenario)


def test_public_read_streams_without_a_token():
    async def test(client: TestClient, hub: StreamHub) -> None:
        async with client.ws_connect("/api/stream") as ws:
            await ws.send_json({"subscribe": ["n01.x"]})
            assert await receive(ws) == {"subscribed": ["n01.x"]}

    with_stream(test, public_read=True)


# -- fructosa-tail, the real console script -------------------------------------------------------------------


def tail_command() -> list[str]:
    script = Path(sys.executable).with_name("fructosa-tail")
    if script.exists():
        return [str(script)]
    found = shutil.which("fructosa-tail")
    return [found] if found else [sys.executable, "-m", "fructosa.tail"]


async def start_tail(*arguments: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *tail_command(), *arguments, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


def with_tail_server(test: Callable[[str, Path, StreamHub], Awaitable[None]], tmp_path: Path) -> None:
    latest = LatestValues()
    latest.observe(block(("n01.CPUPercent.0", 5.0), ("n01.VirtualMemory.percent", 40.0)), "n01")
    hub = StreamHub(latest)
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN + b"\n")

    async def scenario() -> None:
        server = TestServer(stream_app(hub))
        await server.start_server()
        try:
            await test(f"http://127.0.0.1:{server.port}", token_file, hub)
        finally:
            await server.close()

    run(scenario, timeout=90)


def test_tail_prints_matching_lines_only_and_exits_0_on_ctrl_c(tmp_path):
    async def test(url: str, token_file: Path, hub: StreamHub) -> None:
        tail = await start_tail("--url", url, "--token-file", str(token_file), "n01.CPUPercent.*", "n02.x")
        try:
            assert await asyncio.wait_for(tail.stdout.readline(), 20) == f"n01.CPUPercent.0 5.0 {int(NOW)}\n".encode()
            await eventually(lambda: hub.stats()["listening"] == 1, timeout=20, what="fructosa-tail to subscribe")
            hub.observe(
                block(("n01.CPUPercent.0", 6.25), ("n01.VirtualMemory.percent", 41.0), ("n02.x", 3.0), when=NOW + 1.5),
                "n01",
            )
            lines = [await asyncio.wait_for(tail.stdout.readline(), 10) for _ in range(2)]
            assert lines == [f"n01.CPUPercent.0 6.25 {NOW + 1.5}\n".encode(), f"n02.x 3.0 {NOW + 1.5}\n".encode()]
            tail.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(tail.wait(), 10) == 0
            assert b"Traceback" not in await tail.stderr.read()
            assert await tail.stdout.read() == b""  # nothing that did not match
        finally:
            if tail.returncode is None:
                tail.kill()
                await tail.wait()

    with_tail_server(test, tmp_path)


def test_tail_last_prints_current_values_and_exits(tmp_path):
    async def test(url: str, token_file: Path, hub: StreamHub) -> None:
        tail = await start_tail("--url", url, "--token-file", str(token_file), "--last", "n01.*.*")
        stdout, stderr = await asyncio.wait_for(tail.communicate(), 30)
        assert tail.returncode == 0, stderr
        assert stdout.decode().splitlines() == [
            f"n01.CPUPercent.0 5.0 {int(NOW)}",
            f"n01.VirtualMemory.percent 40.0 {int(NOW)}",
        ]

    with_tail_server(test, tmp_path)


def test_tail_exit_codes(tmp_path):
    async def test(url: str, token_file: Path, hub: StreamHub) -> None:
        wrong = tmp_path / "wrong"
        wrong.write_text("wrong-token-0123456789\n")
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            unreachable = f"ws://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refused
            cases = [
                (["--url", url, "--token-file", str(wrong), "n01.*"], 2, "refused the token"),
                (["--url", url, "n01.*"], 2, "--token-file"),
                (["--url", url, "--token-file", str(token_file), "{a,b}" * 10], 2, "brace alternatives"),
                (["--url", url, "--token-file", str(tmp_path / "missing"), "n01.*"], 2, "--token-file"),
                (["--url", unreachable, "--token-file", str(token_file), "n01.*"], 1, "cannot reach lmaster"),
            ]
            for arguments, status, message in cases:
                tail = await start_tail(*arguments)
                stdout, stderr = await asyncio.wait_for(tail.communicate(), 30)
                lines = stderr.decode().strip().splitlines()
                assert (tail.returncode, len(lines), stdout) == (status, 1, b""), (arguments, stderr)
                assert message in lines[0] and lines[0].startswith("fructosa-tail: ")

    with_tail_server(test, tmp_path)


def test_stream_url_accepts_what_users_type():
    from fructosa.tail import TailError, stream_url

    assert stream_url("http://head:8080") == "ws://head:8080/api/stream"
    assert stream_url("https://head/") == "wss://head/api/stream"
    assert stream_url("head:8080") == "ws://head:8080/api/stream"
    assert stream_url("ws://head:8080/api/stream") == "ws://head:8080/api/stream"
    with pytest.raises(TailError):
        stream_url("ftp://head")


def test_lmaster_events_need_no_subscription():
    async def test(client: TestClient, hub: StreamHub) -> None:
        async with client.ws_connect("/api/stream", headers=AUTH) as ws:
            await eventually(lambda: hub.stats()["clients"] == 1, what="the client")
            hub.publish_event({"agent": "n01", "state": "down"})
            assert await receive(ws) == {"event": {"agent": "n01", "state": "down"}}

    with_stream(test)
