"""The jobs pages in a real headless Chromium: the jobs table (filter, sort, keyboard) and one job's page.

The real HTTP application (``make_app`` + ``server.start`` + the job routes)
runs in a thread over a real :class:`~fructosa.jobs.tracker.JobTracker` fed
real blocks and poller reports: two running jobs and two ended ones. The
tests read what they expect from the same server's JSON API. A screenshot
of each page goes to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from fructosa.http import server
from fructosa.http.app import make_app
from fructosa.http.jobs import JobService, add_job_routes
from fructosa.http.settings import HttpSettings
from fructosa.http.state import HttpState, StaticNodes
from fructosa.jobs.slurm import Job
from fructosa.jobs.tracker import JobTracker
from fructosa.taps.latest import LatestValues
from tests.test_http_page import Site, dialog_open, give_token
from tests.test_jobs_api import job_block

if TYPE_CHECKING:
    from tests.support.browser import Browser

pytest_plugins = ["tests.support.browser"]

TOKEN = "jobs-page-token-0123456789"
PAGE_TIMEOUT = 15.0
TEXTS = "return [...document.querySelectorAll(arguments[0])].map(element => element.textContent)"


def fed_tracker(now: float) -> JobTracker:
    """Running: 501 (alice, 2 nodes, busy), 502 (bob, idle). Ended: 498 (alice, idle, short), 499 (carol)."""
    tracker = JobTracker()

    def job(job_id: str, user: str, nodes: str, cpus: int, start: float, end: float | None = None) -> Job:
        state = "RUNNING" if end is None else "COMPLETED"
        return Job(job_id, user, "batch", nodes, state, start, end, cpus, f"run-{job_id}")

    tracker.polled([job("498", "alice", "c01", 8, now - 360), job("499", "carol", "c03", 2, now - 900)], [], [],
                   now - 400)  # fmt: skip
    for step in range(40):
        when = now - 390 + 10 * step
        if now - 360 <= when < now - 330:
            tracker.observe(job_block("498", "c01", when, 30.0, 5e8), "c01")
        tracker.observe(job_block("499", "c03", when, 195.0, 3e9, read=2e6), "c03")
    short_one = job("498", "alice", "c01", 8, now - 360, now - 330)
    tracker.polled([job("499", "carol", "c03", 2, now - 900)], [], [short_one], now - 290)
    tracker.polled([job("501", "alice", "c[01-02]", 8, now - 200), job("502", "bob", "c04", 4, now - 100)], [],
                   [job("499", "carol", "c03", 2, now - 900, now - 5)], now)  # fmt: skip
    for step in range(20):
        when = now - 190 + 10 * step
        for host in ("c01", "c02"):
            tracker.observe(job_block("501", host, when, 390.0, 4e9 + step * 1e7, write=5e6), host)
        tracker.observe(job_block("502", "c04", when, 2.0, 1e8), "c04")
    return tracker


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="jobs-page-server", daemon=True)
    thread.start()
    settings = HttpSettings(listen=(("127.0.0.1", 0),), token=TOKEN.encode())
    app = make_app(settings, HttpState(StaticNodes(), LatestValues()))
    add_job_routes(app, JobService(fed_tracker(time.time())))
    runner, sites = asyncio.run_coroutine_threadsafe(server.start(app), loop).result(timeout=10)
    try:
        yield Site(f"http://127.0.0.1:{sites[0].port}/", TOKEN)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def table_jobs(browser: Browser) -> list[str]:
    return browser.js("return [...document.querySelectorAll('#jobs tbody tr[data-job]')].map(r => r.dataset.job)")


def open_jobs(browser: Browser, site: Site, fragment: str = "#/jobs") -> None:
    browser.driver.get(site.url + fragment)

    def ready() -> str | bool:
        if dialog_open(browser):
            return "dialog"
        return browser.js("const c = document.querySelector('#job-count'), t = document.querySelector('#job-title');"
                          " return !!((c && c.textContent) || (t && t.textContent))")  # fmt: skip

    if browser.wait(ready, PAGE_TIMEOUT, "the jobs page") == "dialog":
        give_token(browser, site.token)
        browser.wait(lambda: ready() is True, PAGE_TIMEOUT, "the jobs page's data")


def test_jobs_table_lists_filters_sorts_and_opens_a_job_by_keyboard(browser: Browser, site: Site) -> None:
    open_jobs(browser, site)
    jobs = {row["job_id"]: row for row in site.api("api/jobs")["jobs"]}
    browser.wait(lambda: sorted(table_jobs(browser)) == sorted(jobs), PAGE_TIMEOUT, "every job in the table")
    assert table_jobs(browser)[:2] == ["502", "501"]  # newest start first
    badges = browser.js(
        "return [...document.querySelectorAll('#jobs tr[data-job=\"498\"] .flag')].map(b => b.textContent)"
    )
    assert badges == [name.replace("_", " ") for name in jobs["498"]["flags"]] == ["idle cpus", "short job"]
    browser.screenshot("jobs-page")

    field = browser.driver.find_element("id", "job-filter")
    field.send_keys("alice")
    browser.wait(lambda: sorted(table_jobs(browser)) == ["498", "501"], PAGE_TIMEOUT, "alice's jobs")
    field.clear()
    field.send_keys(" ")
    browser.wait(lambda: len(table_jobs(browser)) == len(jobs), PAGE_TIMEOUT, "all jobs back")
    browser.driver.find_element("css selector", "#jobs th[data-key='cpu_efficiency_percent']").click()
    efficiencies = [jobs[job]["cpu_efficiency_percent"] for job in table_jobs(browser)]
    assert efficiencies == sorted(efficiencies, key=lambda value: (value is None, value)), efficiencies

    from selenium.webdriver.common.keys import Keys

    body = browser.driver.find_element("tag name", "body")
    field.send_keys(Keys.ESCAPE)  # leave the filter, then keys move the selection
    first = table_jobs(browser)[1]
    body.send_keys("j")
    body.send_keys(Keys.ENTER)
    browser.wait(lambda: browser.driver.current_url.endswith(f"#/job/{first}"), PAGE_TIMEOUT, "the job's page")
    body.send_keys(Keys.ESCAPE)
    browser.wait(lambda: browser.driver.current_url.endswith("#/jobs"), PAGE_TIMEOUT, "back to the table")


def test_job_page_shows_facts_flags_and_charts(browser: Browser, site: Site) -> None:
    open_jobs(browser, site, "#/job/498")
    answer = site.api("api/jobs/498")
    browser.wait(lambda: browser.driver.find_element("id", "job-title").text == "Job 498 (run-498)", PAGE_TIMEOUT)
    flags = browser.wait(lambda: browser.js(TEXTS, "#job-flags li"), PAGE_TIMEOUT, "the flags")
    assert len(flags) == len(answer["profile"]["flags"]) == 2
    for text, flag in zip(flags, answer["profile"]["flags"], strict=True):
        assert flag["message"] in text and f"threshold {flag['threshold']:g}" in text
    charts = browser.wait(lambda: browser.js(TEXTS, "#job-charts .chart h2"), PAGE_TIMEOUT, "the charts")
    assert charts == ["CPU % (of one CPU)", "Resident memory", "IO bytes/s"]
    assert browser.js("return document.querySelectorAll('#job-charts canvas').length") == 3

    open_jobs(browser, site, "#/job/501")
    browser.wait(lambda: browser.js("return document.querySelectorAll('#job-charts .u-legend .u-series').length") >= 3,
                 PAGE_TIMEOUT, "one line per node")  # fmt: skip
    legend = browser.js(
        "return [...document.querySelectorAll('#job-charts .chart')][0].querySelector('.u-legend').textContent"
    )
    assert "c01" in legend and "c02" in legend
    nodes = browser.js(TEXTS, "#job-nodes tbody tr td:first-child")
    assert nodes == ["c01", "c02"]
    browser.screenshot("job-page")
