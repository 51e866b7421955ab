"""Screenshots of lmaster's page, taken from a live pipeline, for the README.

Starts a real carbon-cache, lmaster with ``[http]`` (a token file) and
three lagents running the sensors of the shipped conf/lagent.conf (only the
host name, port, spool and log moved), kills one of them so the table shows
a ``down`` row, waits until the node page has charts with several points,
then saves headless-Chromium screenshots of the nodes page and of one node's
page (docs/page-nodes.png, docs/page-node.png by default). Everything it
started is stopped at the end, each process by its own PID.

Needs the Debian ``chromium`` and ``chromium-driver`` packages (scripts/setup-env).
Usage: ``.venv/bin/python scripts/screenshots.py [--out docs] [--wait 120]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.browser import Browser, BrowserError, unavailable_reason  # noqa: E402
from tests.support.daemons import rewrite_ini  # noqa: E402
from tests.support.live_page import LivePipeline  # noqa: E402

HOSTS = ("cn001", "cn002", "cn003")
KILLED = "cn003"
WINDOW = (1400, 760)
NODE_WINDOW = (1400, 1000)
CHARTS_WANTED = ("CPU %", "Memory %", "Network bytes/s", "Disk bytes/s")


def shipped_agent_conf(host: str, master_port: int, home: Path) -> str:
    """conf/lagent.conf as shipped, with only the host name, port, spool and log moved."""
    return rewrite_ini(
        (REPO / "conf" / "lagent.conf").read_text(),
        {
            ("lmaster", "incoming data port"): str(master_port),
            ("lagent", "hostname"): host,
            ("lagent", "spool dir"): str(home / "spool"),
            ("logging", "filename"): str(home / "lagent.log"),
        },
    )


def chart_points(browser: Browser) -> dict[str, int]:
    """Per chart on the node page, the fewest points any of its series has (lines need two)."""
    return browser.js(
        "return typeof charts === 'undefined' ? {} : Object.fromEntries([...charts.values()]"
        ".map(e => [e.box.querySelector('h2').textContent,"
        " Math.min(...e.plot.data.slice(1).map(column => column.filter(v => v != null).length))]))"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where the PNGs go (default docs/)")
    parser.add_argument("--wait", type=float, default=150, help="most seconds to wait for chart data (default 150)")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"screenshots: {reason}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fructosa-screenshots-"))
    with LivePipeline(work, shipped_agent_conf) as live:
        live.start(HOSTS)
        print(f"carbon-cache pid {live.carbon.pid}, lmaster pid {live.master.pid if live.master else '?'}, "
              f"lagents {', '.join(f'{host} pid {agent.pid}' for host, agent in live.agents.items())}")  # fmt: skip
        deadline = time.monotonic() + 30
        while set(HOSTS) - set(live.api("api/nodes")):
            if time.monotonic() > deadline:
                print("screenshots: the agents did not all connect within 30 s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        live.agents[KILLED].kill()
        print(f"killed {KILLED} (SIGKILL) so the table shows a down row")
        try:
            browser = Browser(work / "chromedriver.log")
        except BrowserError as error:
            print(f"screenshots: {error}", file=sys.stderr)
            return 1
        try:
            return take(browser, live, args.out, args.wait)
        finally:
            browser.quit()


def take(browser: Browser, live: LivePipeline, out: Path, wait: float) -> int:
    driver = browser.driver
    driver.get(live.url)
    browser.js("sessionStorage.setItem('fructosa-token', arguments[0])", live.token)
    host = HOSTS[0]
    driver.set_window_size(*NODE_WINDOW)
    driver.get(f"{live.url}#/node/{host}")
    driver.refresh()
    print(f"waiting (at most {wait:g} s) for two points in every series of: {', '.join(CHARTS_WANTED)} ...")
    try:
        browser.wait(lambda: all(chart_points(browser).get(title, 0) >= 2 for title in CHARTS_WANTED), wait,
                     "the node page's charts")  # fmt: skip
    except AssertionError as error:
        print(f"screenshots: {error}; charts seen: {chart_points(browser)}", file=sys.stderr)
        return 1
    browser.js("document.activeElement.blur(); window.scrollTo(0, 0)")
    save(browser, out / "page-node.png")

    driver.set_window_size(*WINDOW)
    driver.get(f"{live.url}#/nodes")
    browser.wait(lambda: browser.js("return document.querySelectorAll('#nodes tbody tr[data-host]').length")
                 == len(HOSTS), 20, "every node in the table")  # fmt: skip
    browser.wait(lambda: "1 down" in driver.find_element("id", "summary").text, 20, f"{KILLED} down")
    browser.js("document.activeElement.blur()")
    # a viewport just tall enough for the table: the picture shows rows, not a screenful of empty page
    page_height = browser.js("return Math.ceil(document.querySelector('#nodes-view').getBoundingClientRect().bottom)")
    chrome = browser.js("return window.outerHeight - window.innerHeight")
    driver.set_window_size(WINDOW[0], page_height + chrome)
    save(browser, out / "page-nodes.png")
    return 0


def save(browser: Browser, path: Path) -> None:
    if not browser.driver.save_screenshot(str(path)):
        raise BrowserError(f"Chromium did not save {path}")
    print(f"saved {path}")


if __name__ == "__main__":
    sys.exit(main())
