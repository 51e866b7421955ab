"""A real headless Chromium driven by selenium, for tests of lmaster's web page.

The page is plain JavaScript that only a browser runs, so its tests use the
Debian ``chromium`` and ``chromium-driver`` packages (scripts/setup-env
installs them) through the system chromedriver, never a downloaded one.
:func:`unavailable_reason` says why not when they are missing; then the
tests skip with that reason and nothing else is skipped silently.

:class:`Browser` starts one chromedriver (our child process, which starts
its own Chromium) and checks it answers before handing it out; ``quit()``
ends that driver and its browser only, then makes sure the chromedriver
process we started is gone (by its PID). Screenshots go to
:func:`artifacts_dir` (``test-artifacts/`` at the repository root, or
``$FRUCTOSA_TEST_ARTIFACTS``), kept after the run for people to look at.

The ``browser`` fixture (module scope: a Chromium start costs a second or
two) is used by test modules through ``pytest_plugins``.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_NAMES = ("chromium", "chromium-browser")
WINDOW = (1400, 900)
ARGUMENTS = ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={WINDOW[0]},{WINDOW[1]}")
START_TIMEOUT = 30.0
REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def chromium_binary() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def unavailable_reason() -> str | None:
    """Why no browser test can run here (None when one can)."""
    missing = []
    if chromium_binary() is None:
        missing.append("chromium")
    if not os.access(CHROMEDRIVER, os.X_OK):
        missing.append(f"chromium-driver ({CHROMEDRIVER})")
    if missing:
        install = "apt-get install chromium chromium-driver"
        return f"headless browser not installed: missing {', '.join(missing)} ({install})"
    return None  # selenium is part of the test extra: without it the tests fail, they do not skip


def artifacts_dir() -> Path:
    """Where screenshots stay after the run (created on demand)."""
    path = Path(os.environ.get("FRUCTOSA_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class BrowserError(RuntimeError):
    """Chromium or chromedriver did not start, or did not answer in time."""


class Browser:
    """One headless Chromium through the system chromedriver; ``driver`` is selenium's WebDriver."""

    def __init__(self, log_path: Path, start_timeout: float = START_TIMEOUT) -> None:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = chromium_binary() or CHROMIUM_NAMES[0]
        for argument in ARGUMENTS:
            options.add_argument(argument)
        self.log_path = log_path
        self.service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log_path))
        try:
            self.driver = webdriver.Chrome(service=self.service, options=options)
        except WebDriverException as error:
            self.service.stop()
            first = (error.msg or str(error)).strip().splitlines()[0]
            raise BrowserError(f"chromedriver could not start Chromium: {first} (log: {log_path})") from None
        self.driver.set_page_load_timeout(start_timeout)
        self.driver.set_script_timeout(start_timeout)
        try:
            self.wait(lambda: self.driver.execute_script("return document.readyState") == "complete",
                      start_timeout, "Chromium's first blank page")  # fmt: skip
        except BaseException:
            self.quit()
            raise

    @property
    def chromedriver_pid(self) -> int | None:
        process = getattr(self.service, "process", None)
        return process.pid if process else None

    def wait(
        self,
        condition: Callable[[], T],
        timeout: float = 10.0,
        what: str = "the page",
        describe: Callable[[], object] | None = None,
    ) -> T:
        """Poll ``condition`` (selenium errors count as not yet) until it is truthy; return its value.

        On timeout the AssertionError also holds ``describe()``, when given: what the page showed last."""
        from selenium.common.exceptions import WebDriverException

        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            try:
                value = condition()
                if value:
                    return value
            except WebDriverException as error:
                last_error = error
            if time.monotonic() > deadline:
                detail = f" (last error: {str(last_error).strip().splitlines()[0]})" if last_error else ""
                if describe is not None:
                    try:
                        detail += f"; seen: {describe()}"
                    except WebDriverException as error:
                        detail += f"; the page did not answer: {str(error).strip().splitlines()[0]}"
                raise AssertionError(f"{what}: not ready within {timeout:g} s{detail}")
            time.sleep(0.05)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def screenshot(self, name: str) -> Path:
        """A PNG of the window under :func:`artifacts_dir`; prints where it went."""
        path = artifacts_dir() / f"{name}.png"
        if not self.driver.save_screenshot(str(path)):
            raise BrowserError(f"Chromium did not save a screenshot to {path}")
        print(f"screenshot: {path}")
        return path

    def quit(self) -> None:
        """End this driver's browser session and the chromedriver we started; idempotent."""
        pid = self.chromedriver_pid
        try:
            self.driver.quit()  # ends the session (its Chromium) and stops our chromedriver service
        except Exception:  # a driver already dead: stop the service ourselves
            self.service.stop()
        if pid is not None:
            _wait_gone(pid, timeout=10.0)


def _wait_gone(pid: int, timeout: float) -> None:
    """Poll until ``pid`` exited (service.stop() reaps it); SIGKILL it, ours alone, if it did not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """A ready headless Chromium for the module's tests; skips (with why) where none is installed."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    instance = Browser(tmp_path_factory.mktemp("browser") / "chromedriver.log")
    try:
        yield instance
    finally:
        instance.quit()
