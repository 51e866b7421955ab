"""lmaster's web page in a real headless Chromium, against a real lmaster and real lagents.

The ``live`` fixture starts the real pipeline on loopback (a carbon-cache,
lmaster with ``[http]`` and a token file, and lagent processes that differ
only in their ``[lagent] hostname``; tests/support/live_page.py). The tests
only know the page's address and token (:class:`Site`) and read what they
expect from the same server's JSON API. They give the token, find every
agent in the table, filter, group, open a node page with its uPlot charts
and facts, and see a SIGKILLed agent's row turn ``down`` as the page
refreshes itself.

A fake node source is used only where real processes cannot go: 5,000
nodes, to check the table stays fast and keeps only a page of rows in the
DOM. Screenshots go to ``test-artifacts/`` (tests/support/browser.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fructosa.http import server
from fructosa.http.app import make_app
from fructosa.http.nodes import group_key
from fructosa.http.settings import HttpSettings
from fructosa.http.state import HttpState, NodeRecord, StaticNodes
from fructosa.taps.latest import LatestValues
from tests.support.configs import agent_ini
from tests.support.live_page import LivePipeline
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from tests.support.browser import Browser

pytest_plugins = ["tests.support.browser"]
pytestmark = pytest.mark.timeout(240)

HOSTS = ("page-alpha", "page-beta", "page-gamma")
DOOMED = "page-doomed"
"""The agent killed with SIGKILL, started for that test alone so the others stay up."""
SENSORS = {
    "CPUPercent": {"time_interval": 1, "percpu": "yes", "total": "no"},
    "VirtualMemory": {"time_interval": 1},
    "NetIOCounters": {"time_interval": 1},
}
PAGE_TIMEOUT = 15.0
DOWN_WITHIN = 20.0
"""Seconds from SIGKILL to a ``down`` row: lmaster sees the connection close at once, the page refreshes every 5 s."""
PAGE_ROWS = 100
"""The page's rows per page (PAGE_SIZE in static/app.js)."""


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


def test_agent_conf(host: str, master_port: int, home: Path) -> str:
    return agent_ini(home, master_port, hostname=host, lagent={"heartbeat interval": 1}, sensors=SENSORS)


test_agent_conf.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePipeline]:
    """carbon-cache ← lmaster [http] ← one lagent per name in :data:`HOSTS`, all up with values."""
    pipeline = LivePipeline(tmp_path_factory.mktemp("http-page"), test_agent_conf).start(HOSTS)
    try:
        wait_for(
            lambda: all(
                host in nodes and nodes[host]["state"] == "up" and nodes[host]["cpu_usage"] is not None
                for nodes in [pipeline.api("api/nodes")] for host in HOSTS
            ),
            30, "every agent up with values", describe=lambda: pipeline.api("api/nodes"),
        )  # fmt: skip
        yield pipeline
    finally:
        pipeline.stop()


@pytest.fixture(scope="module")
def site(live: LivePipeline) -> Site:
    return Site(live.url, live.token)


# -- driving the page -----------------------------------------------------------


def table_hosts(browser: Browser) -> list[str]:
    return browser.js("return [...document.querySelectorAll('#nodes tbody tr[data-host]')].map(r => r.dataset.host)")


def row_state(browser: Browser, host: str) -> str | None:
    return browser.js(
        "const row = [...document.querySelectorAll('#nodes tbody tr[data-host]')]"
        ".find(r => r.dataset.host === arguments[0]);"
        "return row ? row.querySelector('.state').textContent : null",
        host,
    )


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


def type_filter(browser: Browser, text: str) -> None:
    """Replace the filter's text as a user does: select all, delete, type (every step a real key event).

    WebDriver's ``clear()`` sends no input event, so the page may not have seen the field empty; the
    field's value is checked after typing and the keys are sent again if the page had put the old text back.
    """
    from selenium.webdriver.common.keys import Keys

    field = browser.driver.find_element("id", "filter")
    for _ in range(3):
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.BACKSPACE)
        field.send_keys(text)
        if field.get_attribute("value") == text:
            return
    raise AssertionError(f"the filter field holds {field.get_attribute('value')!r}, not {text!r}")


def matches(node: dict[str, Any], text: str) -> bool:
    """The page's text filter: a substring of host, agent, platform, system, CPU, address, state or a GPU."""
    fields = [node["hostname"], node["agent"], node["platform"], node["system"], node["cpu"], node["ip_address"],
              node["state"], *node["gpus"]]  # fmt: skip
    return any(value and text.lower() in str(value).lower() for value in fields)


# -- tests against the real lmaster and lagents ----------------------------------


def test_page_asks_for_the_token_then_lists_every_agent(browser: Browser, site: Site) -> None:
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
    give_token(browser, site.token or "")
    browser.wait(lambda: set(HOSTS) <= set(table_hosts(browser)), PAGE_TIMEOUT, "every test agent in the table")
    assert not dialog_open(browser)
    nodes = site.api("api/nodes")
    assert sorted(table_hosts(browser)) == sorted(nodes)
    for host in HOSTS:
        assert row_state(browser, host) == "up"
    counts = {state: sum(node["state"] == state for node in nodes.values()) for state in ("up", "late", "down")}
    assert browser.driver.find_element("id", "summary").text == (
        f"{counts['up']} up · {counts['late']} late · {counts['down']} down"
    )
    browser.screenshot("nodes-page")


def test_text_and_state_filters_narrow_the_table(browser: Browser, site: Site) -> None:
    open_page(browser, site)
    nodes = site.api("api/nodes")
    for text in (HOSTS[1], "GAMMA", "page-", "127.0.0.1", "no-such-node-anywhere"):
        type_filter(browser, text)
        want = sorted(host for host, node in nodes.items() if matches(node, text))
        browser.wait(lambda want=want: sorted(table_hosts(browser)) == want, PAGE_TIMEOUT, f"rows for {text!r}",
                     describe=lambda: (table_hosts(browser), browser.js("return location.hash")))  # fmt: skip
    assert browser.driver.find_element("id", "page-info").text == "no nodes"
    assert browser.driver.find_element("css selector", "#nodes tbody").text == "No node matches these filters."
    assert "q=no-such-node-anywhere" in browser.driver.current_url  # the view is bookmarkable
    type_filter(browser, " ")  # an input event with an empty filter
    browser.wait(lambda: len(table_hosts(browser)) == len(nodes), PAGE_TIMEOUT, "all rows back")

    for state in ("up", "down"):
        choose(browser, "state-filter", state)
        want = sorted(host for host, node in site.api(f"api/nodes?state={state}").items())
        browser.wait(lambda want=want: sorted(table_hosts(browser)) == want, PAGE_TIMEOUT, f"the {state} rows")
        assert f"state={state}" in browser.driver.current_url
    choose(browser, "state-filter", "")
    browser.wait(lambda: set(HOSTS) <= set(table_hosts(browser)), PAGE_TIMEOUT, "all rows back")


def test_grouping_puts_each_node_under_its_group(browser: Browser, site: Site) -> None:
    open_page(browser, site)

    def headers() -> list[str]:
        return browser.js("return [...document.querySelectorAll('#nodes tbody tr.group')].map(r => r.textContent)")

    for attribute in ("hostname", "platform"):
        grouped = site.api(f"api/nodes?group_by={attribute}")
        choose(browser, "group-by", attribute)
        want = [f"{attribute}: {name} ({len(members)})" for name, members in grouped.items()]
        browser.wait(lambda want=want: sorted(headers()) == sorted(want), PAGE_TIMEOUT, f"one header per {attribute}")
        rows = browser.js(
            "return [...document.querySelectorAll('#nodes tbody tr')].map(r => r.dataset.host || r.textContent)"
        )
        prefix, group = f"{attribute}: ", None
        for row in rows:  # every host row follows its own group's header
            if row.startswith(prefix):
                group = row[len(prefix) : row.rindex(" (")]
            else:
                assert group is not None and row in grouped[group], (row, group)
        assert sum(not row.startswith(prefix) for row in rows) == sum(map(len, grouped.values()))
        node = next(iter(next(iter(grouped.values())).values()))
        assert group_key(node, attribute) in grouped
    browser.screenshot("nodes-grouped")
    choose(browser, "group-by", "")
    browser.wait(lambda: headers() == [], PAGE_TIMEOUT, "the table without groups")


def test_keyboard_j_k_enter_opens_the_selected_node(browser: Browser, site: Site) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, site, "#/nodes")
    hosts = browser.wait(lambda: table_hosts(browser), PAGE_TIMEOUT, "the rows")
    browser.js("document.activeElement.blur()")
    presses = min(2, len(hosts) - 2)  # j once too many then k: the last j must still move
    ActionChains(browser.driver).send_keys("j" * (presses + 1) + "k").perform()
    selected = browser.js("return document.querySelector('#nodes tbody tr.selected').dataset.host")
    assert selected == hosts[presses]
    ActionChains(browser.driver).send_keys(Keys.ENTER).perform()
    browser.wait(lambda: browser.driver.find_element("id", "node-title").text == hosts[presses], PAGE_TIMEOUT,
                 "the node page of the selected row")  # fmt: skip
    assert browser.driver.current_url.endswith(f"#/node/{hosts[presses]}")
    ActionChains(browser.driver).send_keys(Keys.ESCAPE).perform()  # back to the table
    browser.wait(lambda: browser.js("return !document.querySelector('#nodes-view').hidden"), PAGE_TIMEOUT)
    # the row we came from is still the selected one, so j/k carry on from there
    assert browser.js("return document.querySelector('#nodes tbody tr.selected').dataset.host") == hosts[presses]


def test_node_page_shows_the_agents_facts_and_charts_of_its_data(browser: Browser, site: Site) -> None:
    host = HOSTS[0]
    wait_for(lambda: len(site.api(f"api/nodes/{host}/history?series=CPUPercent.*").get(f"{host}.CPUPercent.0", {})
                         .get("times", [])) >= 3, 30, "three CPU points in the history")  # fmt: skip
    open_page(browser, site, f"#/node/{host}")

    def chart_data() -> dict[str, list[int]]:
        return browser.js(
            "return Object.fromEntries([...charts.values()].map(e => [e.box.querySelector('h2').textContent,"
            " [e.plot.data.length, e.plot.data[0].length, e.box.querySelectorAll('canvas').length]]))"
        )

    columns, points, canvases = browser.wait(lambda: chart_data().get("CPU %"), PAGE_TIMEOUT, "the CPU chart")
    assert columns == 1 + os.cpu_count()  # x, then one column per CPU of this machine
    assert points > 1
    assert canvases == 1
    browser.wait(lambda: chart_data().get("Memory %", [0, 0])[1] > 1, PAGE_TIMEOUT, "the memory chart's points")
    browser.wait(lambda: chart_data().get("Network bytes/s", [0, 0])[1] > 1, PAGE_TIMEOUT, "the traffic chart")
    drawn = browser.js(
        "const c = [...charts.values()][0].box.querySelector('canvas');"
        "return c.width > 100 && c.height > 50 && c.getContext('2d').getImageData(0, 0, c.width, c.height)"
        ".data.some((v, i) => i % 4 === 3 && v > 0)"
    )
    assert drawn, "the chart canvas is blank"
    stamp, ticks = browser.js(  # times read as an admin writes them: ISO day, 24-hour clock
        "const e = [...charts.values()][0], u = e.plot, t = u.data[0][u.data[0].length - 1];"
        "u.setCursor({left: u.valToPos(t, 'x'), top: 10});"
        "return [e.box.querySelector('.u-legend .u-series .u-value').textContent,"
        " u.axes[0].values(u, [t - 60, t], 0, 90, 60).concat(u.axes[0].values(u, [t], 0, 90, 10))]"
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", stamp), stamp
    assert all(re.fullmatch(r"(\d\d-\d\d )?\d\d:\d\d", tick) for tick in ticks[:2]), ticks
    assert re.fullmatch(r"\d\d:\d\d:\d\d", ticks[2]), ticks

    facts = browser.js(
        "const d = {}; document.querySelectorAll('#node-facts dt').forEach(dt => d[dt.textContent] ="
        " dt.nextElementSibling.textContent); return d"
    )
    node = site.api(f"api/nodes/{host}")
    assert facts["CPUs"] == str(os.cpu_count())
    assert facts["State"] == "up" and facts["Address"] == "127.0.0.1" and facts["Agent"] == node["agent"]
    assert facts["Platform"] == node["platform"] and facts["Heartbeat"] == "1 s"
    assert "CPUPercent" in facts["Sensors"] and "NetIOCounters" in facts["Sensors"]
    browser.screenshot("node-page")


def test_node_page_charts_move_with_the_live_stream_without_polling(browser: Browser, site: Site) -> None:
    interval = 1.0  # the agents' sensor interval (SENSORS above)
    nodes = site.api("api/nodes")
    host = next(host for host in sorted(nodes) if nodes[host]["state"] == "up")
    open_page(browser, site, f"#/node/{host}")
    browser.wait(lambda: browser.driver.find_element("id", "live").text == "● live", PAGE_TIMEOUT, "the live badge")
    newest = "const c = charts.get('CPU %'); return c ? c.plot.data[0][c.plot.data[0].length - 1] : 0"
    polls = "return performance.getEntriesByType('resource').filter(e => e.name.includes('/history')).length"
    before, polled = browser.wait(lambda: browser.js(newest), PAGE_TIMEOUT, "the CPU chart"), browser.js(polls)
    browser.wait(lambda: browser.js(newest) >= before + 2 * interval, 4 * interval + PAGE_TIMEOUT,
                 "two newer CPU points at the chart's right edge")  # fmt: skip
    # At most the catch-up poll made when the stream was accepted: the stream drew the new points
    assert browser.js(polls) <= polled + 1
    assert browser.driver.current_url.endswith(f"#/node/{host}")


def test_a_killed_agent_turns_down_on_the_open_page(browser: Browser, site: Site, live: LivePipeline) -> None:
    doomed = live.start_agent(DOOMED)
    # a fresh agent on a busy machine may take a while to start; lmaster must know it before the page can
    wait_for(lambda: live.api("api/nodes").get(DOOMED, {}).get("state") == "up", 60, f"{DOOMED} up in lmaster's API",
             describe=lambda: live.api("api/nodes").get(DOOMED))  # fmt: skip
    open_page(browser, site)
    browser.wait(lambda: row_state(browser, DOOMED) == "up", PAGE_TIMEOUT + 10, f"{DOOMED}'s row up")
    doomed.kill()
    killed_at = time.monotonic()
    browser.wait(lambda: row_state(browser, DOOMED) == "down", DOWN_WITHIN, f"{DOOMED}'s row down after SIGKILL")
    print(f"{DOOMED} shown down {time.monotonic() - killed_at:.1f} s after SIGKILL")
    assert all(row_state(browser, host) == "up" for host in HOSTS)
    assert "1 down" in browser.driver.find_element("id", "summary").text
    browser.screenshot("nodes-one-down")


def test_an_unreachable_lmaster_shows_a_banner_and_dims_the_old_data(browser: Browser, live: LivePipeline) -> None:
    """Last of the real ones: it stops lmaster (the fixture's own stop is idempotent)."""
    open_page(browser, Site(live.url, live.token))
    assert browser.driver.find_element("id", "status").text == ""
    assert live.master is not None
    live.master.stop()
    banner = browser.wait(lambda: browser.driver.find_element("id", "status").text, PAGE_TIMEOUT, "the error banner")
    assert banner.startswith("⚠ lmaster unreachable · data from ") and "retrying" in banner, banner
    assert browser.js("return document.body.classList.contains('stale')")
    assert set(HOSTS) <= set(table_hosts(browser))  # the last data stays on screen, dimmed
    browser.screenshot("nodes-lmaster-unreachable")


# -- 5,000 nodes: a fake source, since that many real agents cannot run here --------

MANY = 5000


def many_records(now: float) -> list[NodeRecord]:
    platforms = ("Debian 12 (6.1.0-18-amd64)", "Rocky Linux 9.3 (5.14.0-362.8.1.el9_3.x86_64)")
    return [
        NodeRecord(
            f"node{index:05d}",
            ip_address=f"10.{index // 65536}.{index // 256 % 256}.{index % 256}",
            connected=index % 97 != 0,
            last_seen=now - (300 if index % 53 == 0 else 1),
            heartbeat_interval=10.0,
            agent="lagent 0.4.0",
            connected_since=now - 3600,
            cpu="AMD EPYC 7763 64-Core Processor",
            cpus=128,
            memory_bytes=512 << 30,
            boot_time=now - 86_400,
            system="Linux",
            platform=platforms[index % 2],
            sensors={"CPUPercent": 10.0},
        )  # fmt: skip
        for index in range(MANY)
    ]


class ServedApp:
    """The HTTP application (``server.start``) on its own event loop in a thread; ``stop()`` ends both."""

    def __init__(self, settings: HttpSettings, state: HttpState) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="http-page-server", daemon=True)
        self.thread.start()
        self.runner, sites = asyncio.run_coroutine_threadsafe(
            server.start(make_app(settings, state)), self.loop
        ).result(timeout=10)
        self.port = sites[0].port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the HTTP server thread did not stop"
        self.loop.close()


@pytest.fixture(scope="module")
def many_site() -> Iterator[Site]:
    """The HTTP application over :data:`MANY` fake nodes, no token."""
    state = HttpState(StaticNodes(many_records(time.time())), LatestValues())
    served = ServedApp(HttpSettings(listen=(("127.0.0.1", 0),)), state)
    try:
        yield Site(f"http://127.0.0.1:{served.port}/", None)
    finally:
        served.stop()


def test_five_thousand_nodes_render_and_filter_fast_with_one_page_in_the_dom(browser: Browser, many_site: Site) -> None:
    started = time.monotonic()
    open_page(browser, many_site)
    loaded = time.monotonic() - started
    assert browser.driver.find_element("id", "page-info").text == f"rows 1–{PAGE_ROWS} of {MANY} · {MANY} nodes"
    assert len(browser.js("return document.querySelectorAll('#nodes tbody tr')")) == PAGE_ROWS
    timed = (
        "const f = document.querySelector('#filter'); const t = performance.now();"
        "f.value = arguments[0]; f.dispatchEvent(new Event('input')); return performance.now() - t"
    )
    filter_ms = max(browser.js(timed, text) for text in ("node04", "rocky", "down", ""))
    resort = (
        "const t = performance.now(); document.querySelector('th[data-key=last_seen]').click();"
        "return performance.now() - t"
    )
    sort_ms = browser.js(resort)
    print(f"{MANY} nodes: page loaded in {loaded:.2f} s, filter {filter_ms:.0f} ms, sort {sort_ms:.0f} ms")
    # Wall-clock bounds against a page that would build all 5,000 rows per keystroke (seconds each), loose enough
    # for a loaded 2-core CI box (a filter took 504 ms there once); the page's speed is not a unit test's to measure.
    assert loaded < 30 and filter_ms < 2000 and sort_ms < 2000
    assert len(browser.js("return document.querySelectorAll('#nodes tbody tr')")) == PAGE_ROWS
    browser.js("const f = document.querySelector('#filter'); f.value = 'node0499'; f.dispatchEvent(new Event('input'))")
    assert sorted(table_hosts(browser)) == [f"node0499{digit}" for digit in range(10)]
