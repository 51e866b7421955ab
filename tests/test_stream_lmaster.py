"""The live stream end to end: a real lmaster ([http] with a token file), real lagents, a real carbon-cache.

``fructosa-tail`` runs as the installed console script; other clients are
aiohttp's WebSocket client, and a hand-made one (:class:`RawWebSocket`) that
reads only when told, with a tiny receive buffer: a stalled subscriber as
the network sees it. The stream must never cost the relay: whisper keeps
every value the agent journaled while a client stalls, and hostile clients
get an error or a close while lmaster goes on relaying.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import select
import signal
import socket
import statistics
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from fructosa.config.master import SlurmConfig
from fructosa.jobs.events import JobEventsPoller
from fructosa.jobs.slurm import Job
from fructosa.master.agents import AgentLink, AgentTable
from fructosa.master.web import agent_event
from tests.support.carbon import CarbonCache, free_ports
from tests.support.configs import agent_ini, master_ini
from tests.support.daemons import Daemon, script
from tests.support.journal import journaled, missing_points
from tests.support.peer import Peer
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from tests.support.browser import Browser

pytest_plugins = ["tests.support.browser"]
pytestmark = pytest.mark.timeout(240)

TOKEN = "stream-token-" + "0123456789abcdef" * 2
INTERVAL = 1.0
"""Seconds between two samples of every sensor of the agents."""
SENSORS = {"CPUPercent": {"time_interval": INTERVAL, "total": "yes"}, "VirtualMemory": {"time_interval": INTERVAL}}
HOSTS = ("node-a", "node-b")
STREAM_QUEUE = 500
"""``[http] stream queue`` of the test lmaster: small, so a stalled client overflows it within seconds."""
SLACK = 1.0
"""Seconds of scheduling slack on a loaded 2-core machine, on top of what the README promises."""
FLOOD_RATE = 5000
"""Datapoints per second a simulated agent sends while a client stalls."""
FLOOD_PATHS = 20
FLOOD_PATH = "flood.Load.m{:02d}." + "x" * 190
"""Long paths, so that the flood outgrows the kernel's socket buffers (4 MiB) within seconds."""


@dataclass
class Site:
    workdir: Path
    carbon: CarbonCache
    master_port: int = 0
    http_port: int = 0
    token_file: Path = Path()
    master: Daemon | None = None
    agents: dict[str, Daemon] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/api/stream"

    def start_agent(self, host: str, journal: bool = False) -> Daemon:
        conf = self.workdir / f"{host}.conf"
        lagent: dict[str, object] = {"heartbeat interval": 1}
        if journal:
            lagent["journal file"] = self.journal(host)
        conf.write_text(agent_ini(self.workdir, self.master_port, hostname=host, lagent=lagent, sensors=SENSORS))
        workdir = self.workdir / host
        workdir.mkdir(exist_ok=True)
        agent = self.agents[host] = Daemon("lagent", conf, workdir).start()
        return agent

    def journal(self, host: str) -> Path:
        return self.workdir / f"{host}.journal"

    def tail(self, *arguments: str, token_file: Path | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
        argv = [script("fructosa-tail"), "--url", f"http://127.0.0.1:{self.http_port}"]
        argv += ["--token-file", str(token_file or self.token_file), *arguments]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("stream-lmaster")
    with CarbonCache(workdir / "carbon") as carbon:
        site = Site(workdir, carbon)
        site.master_port, site.http_port = free_ports(2)
        site.token_file = workdir / "http-token"
        site.token_file.write_text(TOKEN + "\n")
        site.token_file.chmod(0o600)
        http = {"listen": f"127.0.0.1:{site.http_port}", "token file": site.token_file, "stream queue": STREAM_QUEUE}
        conf = workdir / "lmaster.conf"
        lmaster = {"self metrics interval": 0.5}
        conf.write_text(
            master_ini(
                workdir, site.master_port, carbon.pickle_port, level="INFO", lmaster=lmaster, sections={"http": http}
            )
        )
        site.master = Daemon("lmaster", conf, workdir / "run")
        site.master.start(listen_port=site.http_port)
        try:
            for host in HOSTS:
                site.start_agent(host, journal=host == "node-a")
            for host in HOSTS:
                carbon.wait_for(f"{host}.VirtualMemory.percent", timeout=30)
            yield site
        finally:
            for agent in site.agents.values():
                agent.stop()
            site.master.stop()
        output = site.master.output()
        assert "Traceback" not in output, output[-3000:]


def run(coroutine: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def next_message(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> Any:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, (message.type, message.data, message.extra)
    return json.loads(message.data)


async def wait_message(ws: aiohttp.ClientWebSocketResponse, wanted: Any, timeout: float = 10) -> dict:
    """The first message for which ``wanted(message)`` holds; others are skipped."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "timed out waiting for a stream message"
        message = await next_message(ws, left)
        if wanted(message):
            return message


def is_relayed(site: Site, path: str, after: float, timeout: float = 20) -> None:
    """A datapoint of ``path`` newer than ``after`` lands in whisper: lmaster relays."""
    site.carbon.wait_for(path, lambda series: any(when > after for when, _ in series), timeout=timeout)


# -- fructosa-tail -----------------------------------------------------------------------------------------


def test_tail_prints_matching_datapoints_within_one_interval(site: Site) -> None:
    pattern = "node-a.CPUPercent.*"
    argv = [
        script("fructosa-tail"),
        "--url",
        f"http://127.0.0.1:{site.http_port}",
        "--token-file",
        str(site.token_file),
    ]
    process = subprocess.Popen([*argv, pattern], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len({line.split()[2] for _, line in lines}) < 4:
            ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                line = process.stdout.readline()
                assert line, f"fructosa-tail ended: {process.stderr.read() if process.stderr else ''}"
                lines.append((time.time(), line.rstrip("\n")))
    finally:
        process.send_signal(signal.SIGINT)
        status = process.wait(10)
    assert status == 0, process.stderr.read() if process.stderr else ""
    paths = {line.split()[0] for _, line in lines}
    assert paths == {"node-a.CPUPercent.total"} | {p for p in paths if p.startswith("node-a.CPUPercent.")}, paths
    assert "node-a.CPUPercent.total" in paths
    stamps = sorted({float(line.split()[2]) for _, line in lines})
    assert len(stamps) >= 4, lines
    first_stamp = stamps[0]  # the current values, then live ones: each within one interval of its sampling
    live = [(arrived, line) for arrived, line in lines if float(line.split()[2]) > first_stamp]
    delays = [arrived - float(line.split()[2]) for arrived, line in live]
    assert live, lines
    # typically within one interval of the sampling; a busy machine may hold one block back a tick, never more
    assert statistics.median(delays) < INTERVAL + SLACK, delays
    assert max(delays) < 3 * (INTERVAL + SLACK), delays
    for _, line in lines:
        path, value, when = line.split()
        float(value), float(when)


def test_tail_last_prints_the_current_values_and_exits(site: Site) -> None:
    done = site.tail("--last", "node-*.VirtualMemory.percent")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == [f"{host}.VirtualMemory.percent" for host in HOSTS]
    for line in lines:
        _, value, when = line.split()
        assert 0 < float(value) < 100 and time.time() - float(when) < 5 * INTERVAL + SLACK


def test_tail_with_a_wrong_token_exits_2_with_one_line(site: Site, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text("wrong-token-0123456789abcdef\n")
    done = site.tail("node-a.*.*", token_file=wrong)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "refused the token" in done.stderr, done.stderr


def test_tail_to_an_unreachable_port_exits_1(site: Site) -> None:
    (closed,) = free_ports(1)
    argv = [script("fructosa-tail"), "--url", f"127.0.0.1:{closed}", "node-a.*.*"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "cannot reach lmaster" in done.stderr, done.stderr


# -- a browser's token, agent events ------------------------------------------------------------------------


def test_agent_connected_then_killed_is_told_to_a_browser_client(site: Site) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(site.url) as ws:
            await ws.send_json({"token": TOKEN})  # as the page does: browsers cannot set the header
            await ws.send_json({"subscribe": ["node-k.VirtualMemory.percent"]})
            assert await wait_message(ws, lambda m: "subscribed" in m) == {
                "subscribed": ["node-k.VirtualMemory.percent"]
            }
            agent = await asyncio.to_thread(site.start_agent, "node-k")
            up = await wait_message(ws, lambda m: m.get("event", {}).get("agent") == "node-k", timeout=20)
            assert up["event"]["state"] == "connected" and up["event"]["node_state"] == "up"
            points = await wait_message(ws, lambda m: "datapoints" in m, timeout=10)
            assert {path for path, _, _ in points["datapoints"]} == {"node-k.VirtualMemory.percent"}
            agent.kill()
            down = await wait_message(
                ws, lambda m: m.get("event", {}).get("agent") == "node-k" and "datapoints" not in m, timeout=15
            )
            assert down["event"]["state"] == "down" and down["event"]["node_state"] == "down"
            assert abs(down["event"]["time"] - time.time()) < 10

    run(scenario())


def test_a_wrong_first_message_token_closes_with_1008(site: Site) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(site.url) as ws:
            await ws.send_json({"token": "wrong-token-0123456789abcdef"})
            message = await ws.receive(timeout=10)
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1008 and message.extra == "wrong token"

    run(scenario())


# -- a stalled client next to a fast one ----------------------------------------------------------------------


class RawWebSocket:
    """A WebSocket client over a plain socket with a 4 KiB receive buffer, reading only when told."""

    def __init__(self, port: int, token: str | None = TOKEN) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.sock.sendall(
            f"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:  # byte by byte: the frames after the head stay in the socket
            byte = self.sock.recv(1)
            assert byte, f"closed during the handshake: {head!r}"
            head += byte
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_frame(self, payload: bytes, opcode: int = 1) -> None:
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        self.sock.sendall(header + mask + bytes(a ^ b for a, b in zip(payload, itertools.cycle(mask))))

    def send_json(self, message: Any) -> None:
        self.send_frame(json.dumps(message).encode())

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed by lmaster")
            data += chunk
        return data

    def receive(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame (lmaster sends unfragmented, unmasked frames)."""
        first, second = self._exactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._exactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._exactly(8))
        return first & 0x0F, self._exactly(size)

    def close(self) -> None:
        self.sock.close()


def flood(port: int, stop: threading.Event, sent: list[int]) -> None:
    """A simulated agent: FLOOD_RATE datapoints/s over FLOOD_PATHS paths, stamped when sent; acks read and dropped."""
    peer = Peer(port, host="flood")
    per_block = FLOOD_RATE // 10
    try:
        while not stop.is_set():
            started = time.monotonic()
            now = time.time()
            block = [(FLOOD_PATH.format(i % FLOOD_PATHS), (now, float(i))) for i in range(per_block)]
            peer.send_datapoints(block)
            sent[0] += per_block
            while select.select([peer.sock], [], [], 0)[0]:
                if not peer.sock.recv(65536):
                    return
            stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))
    finally:
        peer.close()


def test_a_stalled_client_costs_the_fast_one_and_whisper_nothing(site: Site) -> None:
    stalled = RawWebSocket(site.http_port)
    stalled.send_json({"subscribe": ["**"]})
    stop, sent = threading.Event(), [0]
    delays: list[float] = []
    agent_points: list[float] = []

    async def fast_client() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(site.url, headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
                await ws.send_json({"subscribe": ["flood.Load.m00.*", "node-a.VirtualMemory.percent"]})
                await wait_message(ws, lambda m: "subscribed" in m)
                flooder = threading.Thread(target=flood, args=(site.master_port, stop, sent), daemon=True)
                flooder.start()
                try:
                    deadline = time.monotonic() + 8
                    while time.monotonic() < deadline:
                        message = await next_message(ws)
                        arrived = time.time()
                        for path, when, _ in message.get("datapoints", []):
                            if path.startswith("flood."):
                                delays.append(arrived - when)
                            else:
                                agent_points.append(when)
                finally:
                    stop.set()
                    await asyncio.to_thread(flooder.join, 10)

    started = time.time()
    run(fast_client())
    assert sent[0] >= FLOOD_RATE * 4, sent  # the flood ran (about 8 s of it)
    assert len(delays) >= 40 and max(delays) < 1.0, sorted(delays)[-5:]
    assert len(agent_points) >= 4, agent_points
    # The stalled client reads again: it is told what it lost (in one or more messages), then gets the newest
    # datapoints: lmaster's liveness, made every 0.5 s, from after the flood.
    flood_ended, told, caught_up = time.time(), 0, False
    deadline = time.monotonic() + 30
    while not caught_up:
        assert time.monotonic() < deadline, f"the stalled client did not catch up (told {told} dropped)"
        opcode, payload = stalled.receive()
        if opcode == 1:
            message = json.loads(payload)
            told += message.get("dropped", 0)
            caught_up = any(
                path == "node-a.fructosa.up" and when > flood_ended for path, when, _ in message.get("datapoints", [])
            )
    stalled.close()
    assert told > FLOOD_RATE, told  # most of the flood, for the stalled client
    # whisper holds everything node-a journaled while the client stalled
    journal = site.journal("node-a")
    wanted = {metric: {s for s in seconds if s >= started} for metric, seconds in journaled(journal).items()}
    assert sum(len(seconds) for seconds in wanted.values()) >= 8 * 5, "node-a journaled little during the flood"
    last = max(max(seconds) for seconds in wanted.values() if seconds)

    def nothing_missing() -> bool:
        missing = missing_points([journal], site.carbon)
        return not any(s >= started and s <= last for seconds in missing.values() for s in seconds)

    wait_for(nothing_missing, 30, "every value node-a journaled during the stall in whisper",
             describe=lambda: missing_points([journal], site.carbon))  # fmt: skip


# -- hostile clients ------------------------------------------------------------------------------------------


def test_hostile_clients_get_an_error_or_a_close_and_lmaster_relays_on(site: Site) -> None:
    started = time.time()

    async def scenario() -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(site.url, headers=auth) as ws:
                await ws.send_str("{not json")
                assert "not JSON" in (await next_message(ws))["error"]
                await ws.send_bytes(b"\x00\xff" * 100)
                assert "binary" in (await next_message(ws))["error"]
                await ws.send_json({"subscribe": ["a"] * 10_000})
                assert (await next_message(ws)) == {"error": "at most 100 patterns per client, not 10000"}
                for catastrophic in (
                    "*a" * 200 + "b",  # backtracking in one component
                    "{a,b}" * 40,  # 2^40 brace expansions
                    "**." * 100 + "x",
                    "[" * 300,
                    "x" * 10_000,
                ):
                    asked = time.monotonic()
                    await ws.send_json({"subscribe": [catastrophic]})
                    answer = await next_message(ws)
                    assert set(answer) <= {"error", "subscribed", "current"}, answer
                    assert time.monotonic() - asked < 5, catastrophic[:20]
                # the connection is still served
                await ws.send_json({"subscribe": ["node-b.VirtualMemory.percent"]})
                got = await wait_message(ws, lambda m: "datapoints" in m and m["datapoints"][0][0].startswith("node-b"))
                assert got["datapoints"][0][0] == "node-b.VirtualMemory.percent"
            async with session.ws_connect(site.url, headers=auth) as ws:
                await ws.send_str("x" * (64 * 1024 + 1))
                message = await ws.receive(timeout=10)
                assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1009, message

    run(scenario())
    garbage = RawWebSocket(site.http_port)
    garbage.sock.sendall(os.urandom(4096))  # not WebSocket frames at all
    garbage.sock.settimeout(10)
    try:
        while garbage.sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    garbage.close()
    is_relayed(site, "node-a.VirtualMemory.percent", started + 1)
    is_relayed(site, "node-b.VirtualMemory.percent", started + 1)
    done = site.tail("--last", "node-a.VirtualMemory.percent")
    assert done.returncode == 0 and done.stdout.startswith("node-a.VirtualMemory.percent "), done


# -- the web page ----------------------------------------------------------------------------------------------


def test_the_nodes_table_follows_agents_from_the_stream(site: Site, browser: Browser) -> None:
    browser.driver.get(f"http://127.0.0.1:{site.http_port}/#/nodes")
    browser.wait(lambda: browser.js("return document.querySelector('#token-dialog').open"), 15, "the token dialog")
    browser.driver.find_element("id", "token-input").send_keys(TOKEN + "\n")
    browser.wait(lambda: browser.driver.find_element("id", "live").text == "● live", 20, "the live badge")

    def state(host: str) -> str | None:
        return browser.js(
            "const cell = document.querySelector(`#nodes tbody tr[data-host='${arguments[0]}'] .state`);"
            "return cell ? cell.textContent : null",
            host,
        )

    polls = "return performance.getEntriesByType('resource').filter(e => e.name.includes('api/nodes')).length"
    agent = site.start_agent("node-m")
    # a new node: the table is fetched; 60 s, as every daemon start gets on a loaded machine
    browser.wait(lambda: state("node-m") == "up", 60, "node-m up in the table")
    polled = browser.js(polls)
    agent.kill()
    killed = time.monotonic()
    browser.wait(lambda: state("node-m") == "down", 10, "node-m down in the table")
    assert time.monotonic() - killed < 5
    assert browser.js(polls) == polled  # the event changed the row: no poll of /api/nodes meanwhile
    assert state("node-a") == "up"


# -- lmaster's stop ---------------------------------------------------------------------------------------------


def test_lmaster_stop_closes_every_stream_with_1001_and_exits(tmp_path: Path) -> None:
    master_port, http_port = free_ports(2)
    token_file = tmp_path / "http-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    conf = tmp_path / "lmaster.conf"
    http = {"listen": f"127.0.0.1:{http_port}", "token file": token_file}
    conf.write_text(master_ini(tmp_path, master_port, graphite={"enabled": "no"}, sections={"http": http}))
    master = Daemon("lmaster", conf, tmp_path).start(listen_port=http_port)
    try:
        stalled = RawWebSocket(http_port)
        stalled.send_json({"subscribe": ["**"]})
        stop_took: list[float] = []

        async def scenario() -> None:
            url = f"ws://127.0.0.1:{http_port}/api/stream"
            async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
                await ws.send_json({"token": TOKEN})
                await ws.send_json({"subscribe": ["*.fructosa.*"]})
                await wait_message(ws, lambda m: "subscribed" in m)
                asked = time.monotonic()
                os.kill(master.pid, signal.SIGTERM)  # our own child, by its PID
                while True:
                    message = await ws.receive(timeout=10)
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001, message
                assert message.extra == "lmaster stops"
                await asyncio.to_thread(wait_for, lambda: not master.running, 15, "lmaster's exit")
                stop_took.append(time.monotonic() - asked)

        run(scenario())
        stalled.close()
        assert stop_took[0] < 10, stop_took  # a client that never reads cannot hold the stop up
        output = master.output() + (tmp_path / "lmaster.log").read_text()
        assert "lmaster stopped" in output and "Traceback" not in output, output[-3000:]
    finally:
        master.stop()


# -- the event hooks, driven directly ------------------------------------------------------------------------


def test_liveness_changes_are_told_once_per_transition() -> None:
    table = AgentTable()
    heard: list[tuple[str, bool]] = []
    table.listeners.append(lambda state, up, now: heard.append((state.host, up)))
    table.load("/nonexistent/status.json")
    link = AgentLink(address="10.0.0.1:4000", heartbeat_interval=1.0)
    state = table.heard("n01", link, None, 1000.0)  # first frame: connected
    table.heard("n01", link, state, 1001.0)
    assert table.check_liveness(state, 1002.0) and heard == [("n01", True)]
    assert not table.check_liveness(state, 1010.0)  # silent for more than two heartbeats: late
    assert agent_event(state, False, 1010.0)["node_state"] == "late"
    table.heard("n01", link, state, 1011.0)
    assert table.check_liveness(state, 1011.0)  # it speaks again
    table.detach(state, link, 1012.0)  # its only connection ends: down at once
    assert heard == [("n01", True), ("n01", False), ("n01", True), ("n01", False)]
    assert agent_event(state, False, 1012.0) == {"agent": "n01", "state": "down", "node_state": "down", "time": 1012.0}
    table.check_liveness(state, 1013.0)
    assert len(heard) == 4  # no news, no event


def test_a_host_known_from_the_status_file_starts_down_without_an_event(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"agents": [{"host": "n09", "last_seen": 1.0}]}))
    table = AgentTable()
    heard: list[bool] = []
    table.listeners.append(lambda state, up, now: heard.append(up))
    table.load(str(status))
    for state in table:
        assert not table.check_liveness(state, time.time())
    assert heard == []


class FakeSlurm:
    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.ended: list[Job] = []

    def running_jobs(self) -> list[Job]:
        return list(self.jobs)

    def accounted_jobs(self, job_ids: list[str]) -> list[Job]:
        return [replace(job, state="COMPLETED", end=2000.0) for job in self.ended if job.job_id in job_ids]


def test_job_starts_and_ends_are_published_for_the_stream() -> None:
    slurm = FakeSlurm()
    published: list[dict] = []
    poller = JobEventsPoller(SlurmConfig(enabled=True), lambda datapoints: None, slurm=slurm, publish=published.append)
    job = Job("42", "ana", "gpu", "n[01-02]", "RUNNING", 1500.0, None, 64, "train")
    run(poller.poll())  # jobs already running get no start event
    slurm.jobs = [job]
    run(poller.poll())
    slurm.ended, slurm.jobs = [job], []
    run(poller.poll())
    assert published == [
        {"job": "42", "state": "started", "job_state": "RUNNING", "user": "ana", "name": "train", "partition": "gpu",
         "nodes": "n[01-02]", "cpus": 64, "time": 1500.0},
        {"job": "42", "state": "ended", "job_state": "COMPLETED", "user": "ana", "name": "train", "partition": "gpu",
         "nodes": "n[01-02]", "cpus": 64, "time": 2000.0},
    ]  # fmt: skip
