"""lmaster's web page in a real headless Chromium: nodes table, filters, grouping, keyboard, charts, token.

The tests only know the page's address and token (:class:`Site`, from the
``site`` fixture) and read what they expect from the same server's JSON
API, so the server behind can change: here it is the real HTTP application
(``make_app`` + ``server.start``) in a thread, over a fake
:class:`~fructosa.http.state.NodeSource` of a few nodes and a real
:class:`~fructosa.taps.latest.LatestValues` fed real blocks every second;
a fixture over real lmaster + lagent processes only has to yield another
:class:`Site`. Screenshots of the nodes and node pages go to
``test-artifacts/`` (tests/support/browser.py).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from fructosa.http import server
from fructosa.http.app import make_app
from fructosa.http.nodes import group_key
from fructosa.http.settings import HttpSettings
from fructosa.http.state import HttpState, NodeRecord, StaticNodes
from fructosa.http.stream import add_stream_routes
from fructosa.taps.latest import LatestValues
from fructosa.taps.stream import StreamHub
from fructosa.wire.blocks import Block

if TYPE_CHECKING:
    from tests.support.browser import Browser

pytest_plugins = ["tests.support.browser"]

TOKEN = "page-test-token-0123456789"
FEED_INTERVAL = 2.0
"""Seconds between two fed blocks per node, as an agent's sensors would send them."""
PAGE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Site:
    """All the browser tests know of the server: the page's URL and the token (None: none needed)."""

    url: str
    token: str | None

    def api(self, path: str) -> Any:
        """A JSON answer of the server's API, as the page gets it."""
        request = urllib.request.Request(self.url + path.lstrip("/"), headers={"Accept": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


# -- the fake cluster (what real lmaster + lagent processes would replace) ------


def fake_records(now: float) -> list[NodeRecord]:
    debian, rocky = "Debian 12 (6.1.0-18-amd64)", "Rocky Linux 9.3 (5.14.0-362.8.1.el9_3.x86_64)"
    epyc, xeon = "AMD EPYC 7763 64-Core Processor", "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    sensors = {"CPUPercent": 10.0, "VirtualMemory": 10.0, "NetIOCounters": 10.0, "DiskIOCounters": 30.0}

    def node(name: str, number: int, **facts: Any) -> NodeRecord:
        defaults = dict(ip_address=f"10.1.0.{number}", connected=True, last_seen=now, heartbeat_interval=10.0,
                        agent="lagent 0.4.0", connected_since=now - 86_400 * 3 - number * 600, cpu=epyc, cpus=128,
                        memory_bytes=512 << 30, boot_time=now - 86_400 * 40, system="Linux", platform=debian,
                        sensors=dict(sensors))  # fmt: skip
        return NodeRecord(name, **{**defaults, **facts})

    records = [node(f"node{i:02d}", i) for i in range(1, 11)]
    records += [
        node("node11", 11, platform=rocky, cpu=xeon, cpus=64, memory_bytes=256 << 30, agent="lagent 0.3.2"),
        node("node12", 12, platform=rocky, cpu=xeon, cpus=64, memory_bytes=256 << 30),
        node("node13", 13, last_seen=now - 75),  # connected, silent: late
        node("node14", 14, connected=False, last_seen=now - 3 * 3600, connected_since=None),
        node("gpu01", 101, gpus=["NVIDIA A100-SXM4-80GB"] * 4, memory_bytes=1024 << 30),
        node("gpu02", 102, gpus=["NVIDIA A100-SXM4-80GB"] * 4, memory_bytes=1024 << 30),
    ]
    return records


class FakeCluster:
    """Nodes whose agents send a block every :data:`FEED_INTERVAL`; late and down ones fell silent earlier."""

    def __init__(self, now: float) -> None:
        self.records = fake_records(now)
        self.source = StaticNodes(self.records)
        self.latest = LatestValues()
        self.stream = StreamHub(self.latest)  # the live stream, fed the same blocks
        self.silent_since = {record.hostname: record.last_seen for record in self.records if record.last_seen != now}
        self.counters: dict[str, tuple[float, float]] = {}
        start = now - 60 * FEED_INTERVAL
        for step in range(60):  # the last two minutes, as if the agents had been running
            self.feed(start + step * FEED_INTERVAL)

    def block(self, record: NodeRecord, when: float) -> Block:
        index = int(record.ip_address.rsplit(".", 1)[1])
        phase = when / 60 + index
        busy = 50 + 45 * math.sin(phase) if index % 3 else 8 + 4 * math.sin(phase)
        points = [(f"CPUPercent.{cpu}", max(0.0, min(100.0, busy + 6 * math.sin(phase * 3 + cpu)))) for cpu in range(4)]
        points += [("VirtualMemory.percent", 30 + 10 * math.sin(phase / 2)), ("SwapMemory.percent", 1.5)]
        for name, rate in (("NetIOCounters.bytes_recv", 4e6), ("NetIOCounters.bytes_sent", 1e6),
                           ("DiskIOCounters.read_bytes", 2e6), ("DiskIOCounters.write_bytes", 5e5)):  # fmt: skip
            key = f"{record.hostname}.{name}"
            before, total = self.counters.get(key, (when - FEED_INTERVAL, 1e9))
            self.counters[key] = (when, total + rate * (when - before) * (1.2 + math.sin(phase)))
            points.append((name, self.counters[key][1]))
        if record.hostname == "node01":
            points += [("SlurmJobs.count", 1.0), ("SlurmJobs.job_4242.cpu_percent", 390.0 + 5 * math.sin(phase)),
                       ("SlurmJobs.job_4242.rss", 3.2e9 + 1e8 * math.sin(phase))]  # fmt: skip
        return Block.of([(f"{record.hostname}.{path}", (when, value)) for path, value in points])

    def feed(self, when: float) -> None:
        for record in self.records:
            silent_since = self.silent_since.get(record.hostname)
            if silent_since is None or when <= silent_since:
                block = self.block(record, when)
                self.latest.observe(block, record.hostname)
                self.stream.observe(block, record.hostname)
                record.last_seen = max(record.last_seen or 0.0, when) if silent_since is None else silent_since

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FEED_INTERVAL)
            self.feed(time.time())


class ServedApp:
    """The HTTP application (``server.start``) on its own event loop in a thread; ``stop()`` ends both."""

    def __init__(self, settings: HttpSettings, cluster: FakeCluster) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="http-page-server", daemon=True)
        self.thread.start()
        app = make_app(settings, HttpState(cluster.source, cluster.latest))
        add_stream_routes(app, cluster.stream)
        self.runner, sites = asyncio.run_coroutine_threadsafe(server.start(app), self.loop).result(timeout=10)
        self.port = sites[0].port
        self.feeder = asyncio.run_coroutine_threadsafe(cluster.run(), self.loop)

    def stop(self) -> None:
        self.feeder.cancel()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the HTTP server thread did not stop"
        self.loop.close()


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """The page of the HTTP application over a fake cluster, with a token required."""
    served = ServedApp(HttpSettings(listen=(("127.0.0.1", 0),), token=TOKEN.encode()), FakeCluster(time.time()))
    try:
        yield Site(f"http://127.0.0.1:{served.port}/", TOKEN)
    finally:
        served.stop()


# -- driving the page -----------------------------------------------------------


def table_hosts(browser: Browser) -> list[str]:
    return browser.js("return [...document.querySelectorAll('#nodes tbody tr[data-host]')].map(r => r.dataset.host)")


def open_page(browser: Browser, site: Site, fragment: str = "#/nodes") -> None:
    """Load the page at ``fragment``, giving the token if it asks, and wait for its first data."""
    browser.driver.get(site.url + fragment)
    if site.token and browser.wait(lambda: dialog_open(browser) or page_has_data(browser), PAGE_TIMEOUT) == "dialog":
        give_token(browser, site.token)
    browser.wait(lambda: page_has_data(browser), PAGE_TIMEOUT, f"the page at {fragment}")


def dialog_open(browser: Browser) -> str | None:
    return "dialog" if browser.js("return document.querySelector('#token-dialog').open") else None


def page_has_data(browser: Browser) -> bool:
    return browser.js(
        "return !document.querySelector('#nodes-view').hidden ? document.querySelector('#page-info').textContent !== ''"
        " : document.querySelector('#node-title').textContent !== ''"
    )


def give_token(browser: Browser, token: str) -> None:
    field = browser.driver.find_element("id", "token-input")
    field.clear()
    field.send_keys(token + "\n")


def choose(browser: Browser, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(browser.driver.find_element("id", select_id)).select_by_value(value)


def matches(node: dict[str, Any], text: str) -> bool:
    """The page's text filter: a substring of host, agent, platform, system, CPU, address, state or a GPU."""
    fields = [node["hostname"], node["agent"], node["platform"], node["system"], node["cpu"], node["ip_address"],
              node["state"], *node["gpus"]]  # fmt: skip
    return any(value and text.lower() in str(value).lower() for value in fields)


# -- tests ----------------------------------------------------------------------


def test_page_asks_for_the_token_then_lists_every_node(browser: Browser, site: Site) -> None:
    if not site.token:
        pytest.skip("this server needs no token")
    browser.driver.get(site.url + "#/nodes")
    browser.js("sessionStorage.clear()")
    browser.driver.refresh()
    browser.wait(lambda: dialog_open(browser), PAGE_TIMEOUT, "the token dialog")
    assert browser.driver.find_element("id", "token-dialog").is_displayed()
    assert table_hosts(browser) == []  # nothing shown without the token

    give_token(browser, "not-the-token-0123456789")
    browser.wait(lambda: "refused" in browser.driver.find_element("id", "token-error").text, PAGE_TIMEOUT,
                 "the refused-token message")  # fmt: skip
    assert dialog_open(browser)
    give_token(browser, site.token)
    nodes = site.api("api/nodes")
    browser.wait(lambda: sorted(table_hosts(browser)) == sorted(nodes), PAGE_TIMEOUT, "every node in the table")
    assert not dialog_open(browser)
    counts = {state: sum(node["state"] == state for node in nodes.values()) for state in ("up", "late", "down")}
    assert browser.driver.find_element("id", "summary").text == (
        f"{counts['up']} up · {counts['late']} late · {counts['down']} down"
    )
    browser.screenshot("nodes-page")


def test_text_and_state_filters_narrow_the_table(browser: Browser, site: Site) -> None:
    open_page(browser, site)
    nodes = site.api("api/nodes")
    field = browser.driver.find_element("id", "filter")
    for text in (sorted(nodes)[0], "a100", "rocky", "no-such-node-anywhere"):
        field.clear()
        field.send_keys(text)
        want = sorted(host for host, node in nodes.items() if matches(node, text))
        browser.wait(lambda want=want: sorted(table_hosts(browser)) == want, PAGE_TIMEOUT, f"rows for {text!r}")
    assert browser.driver.find_element("id", "page-info").text == "no nodes"
    assert "q=no-such-node-anywhere" in browser.driver.current_url  # the view is bookmarkable
    field.clear()
    field.send_keys(" ")  # an input event with an empty filter
    browser.wait(lambda: len(table_hosts(browser)) == len(nodes), PAGE_TIMEOUT, "all rows back")

    for state in sorted({node["state"] for node in nodes.values()}):
        choose(browser, "state-filter", state)
        want = sorted(host for host, node in nodes.items() if node["state"] == state)
        browser.wait(lambda want=want: sorted(table_hosts(browser)) == want, PAGE_TIMEOUT, f"the {state} rows")
        assert f"state={state}" in browser.driver.current_url
    choose(browser, "state-filter", "")
    browser.wait(lambda: len(table_hosts(browser)) == len(nodes), PAGE_TIMEOUT, "all rows back")


def test_grouping_puts_each_node_under_its_group(browser: Browser, site: Site) -> None:
    open_page(browser, site)
    grouped = site.api("api/nodes?group_by=platform")
    choose(browser, "group-by", "platform")
    want = [f"platform: {name} ({len(members)})" for name, members in grouped.items()]

    def headers() -> list[str]:
        return browser.js("return [...document.querySelectorAll('#nodes tbody tr.group')].map(r => r.textContent)")

    browser.wait(lambda: sorted(headers()) == sorted(want), PAGE_TIMEOUT, "one header per platform")
    rows = browser.js(
        "return [...document.querySelectorAll('#nodes tbody tr')].map(r => r.dataset.host || r.textContent)"
    )
    group = None
    for row in rows:  # every host row follows its own group's header
        if row.startswith("platform: "):
            group = row[len("platform: ") : row.rindex(" (")]
        else:
            assert group is not None and row in grouped[group], (row, group)
    assert sum(not row.startswith("platform: ") for row in rows) == sum(map(len, grouped.values()))
    node = next(iter(next(iter(grouped.values())).values()))
    assert group_key(node, "platform") in grouped
    browser.screenshot("nodes-grouped")
    choose(browser, "group-by", "")
    browser.wait(lambda: headers() == [], PAGE_TIMEOUT, "the table without groups")


def test_keyboard_j_k_enter_opens_the_selected_node(browser: Browser, site: Site) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, site, "#/nodes")
    hosts = browser.wait(lambda: table_hosts(browser), PAGE_TIMEOUT, "the rows")
    browser.js("document.activeElement.blur()")
    presses = min(2, len(hosts) - 1)
    ActionChains(browser.driver).send_keys("j" * (presses + 1) + "k").perform()
    selected = browser.js("return document.querySelector('#nodes tbody tr.selected').dataset.host")
    assert selected == hosts[presses]
    ActionChains(browser.driver).send_keys(Keys.ENTER).perform()
    browser.wait(lambda: browser.driver.find_element("id", "node-title").text == hosts[presses], PAGE_TIMEOUT,
                 "the node page of the selected row")  # fmt: skip
    assert browser.driver.current_url.endswith(f"#/node/{hosts[presses]}")
    ActionChains(browser.driver).send_keys(Keys.ESCAPE).perform()  # back to the table
    browser.wait(lambda: browser.js("return !document.querySelector('#nodes-view').hidden"), PAGE_TIMEOUT)


def test_node_page_draws_charts_with_the_history(browser: Browser, site: Site) -> None:
    nodes = site.api("api/nodes")
    host = next(host for host in sorted(nodes) if site.api(f"api/nodes/{host}/history"))
    history = site.api(f"api/nodes/{host}/history?series=CPUPercent.*")
    assert history, f"{host} has history but none of CPUPercent.*"
    open_page(browser, site, f"#/node/{host}")

    def chart_data() -> dict[str, list[int]]:
        return browser.js(
            "return Object.fromEntries([...charts.values()].map(e => [e.box.querySelector('h2').textContent,"
            " [e.plot.data.length, e.plot.data[0].length, e.box.querySelectorAll('canvas').length]]))"
        )

    charts = browser.wait(lambda: chart_data().get("CPU %"), PAGE_TIMEOUT, "the CPU chart")
    columns, points, canvases = charts
    assert columns == 1 + len(history)  # x, then one column per CPU
    assert points >= min(2, max(len(series["times"]) for series in history.values()))
    assert canvases == 1
    drawn = browser.js(
        "const c = [...charts.values()][0].box.querySelector('canvas');"
        "return c.width > 100 && c.height > 50 && c.getContext('2d').getImageData(0, 0, c.width, c.height)"
        ".data.some((v, i) => i % 4 === 3 && v > 0)"
    )
    assert drawn, "the chart canvas is blank"
    browser.wait(lambda: len(chart_data()) >= 3, PAGE_TIMEOUT, "the memory and traffic charts")
    browser.screenshot("node-page")


def test_node_page_charts_move_with_the_live_stream_without_polling(browser: Browser, site: Site) -> None:
    nodes = site.api("api/nodes")
    host = next(host for host in sorted(nodes) if nodes[host]["state"] == "up")
    open_page(browser, site, f"#/node/{host}")
    browser.wait(lambda: browser.driver.find_element("id", "live").text == "● live", PAGE_TIMEOUT, "the live badge")
    newest = "const c = charts.get('CPU %'); return c ? c.plot.data[0][c.plot.data[0].length - 1] : 0"
    polls = "return performance.getEntriesByType('resource').filter(e => e.name.includes('/history')).length"
    before, polled = browser.wait(lambda: browser.js(newest), PAGE_TIMEOUT, "the CPU chart"), browser.js(polls)
    browser.wait(lambda: browser.js(newest) >= before + 2 * FEED_INTERVAL, 4 * FEED_INTERVAL + PAGE_TIMEOUT,
                 "two newer CPU points at the chart's right edge")  # fmt: skip
    # At most the catch-up poll made when the stream was accepted (it brings no point 4 s newer): the stream drew them
    assert browser.js(polls) <= polled + 1
    assert browser.driver.current_url.endswith(f"#/node/{host}")
