"""The one way tests wait: poll a condition until a deadline.

Daemons, carbon-cache and Slurm answer in their own time; a fixed sleep is
either too short under load (a flaky test) or too long everywhere (a slow
one). :func:`wait_for` returns as soon as the condition holds and fails
with a message saying what was awaited, and what was seen last, when it
never does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.1
"""Seconds between two looks: short next to what the daemons take to react."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str = "",
    *,
    interval: float = POLL_INTERVAL,
    describe: Callable[[], object] | None = None,
) -> T:
    """Call ``predicate`` until it returns something true; return that.

    After ``timeout`` seconds raise AssertionError naming ``what`` (else the
    predicate's name) and, when given, ``describe()``: the state that was seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            name = what or getattr(predicate, "__name__", "condition")
            seen = f"; {describe()}" if describe is not None else ""
            raise AssertionError(f"{name}: not so within {timeout:g} s{seen}")
        time.sleep(interval)


def log_text(path: Path) -> str:
    """The file's text so far; empty while it does not exist."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_for_log(path: Path, text: str, timeout: float = 30.0) -> None:
    """Poll a log file until ``text`` appears in it: the daemon's own report that it got there."""
    wait_for(
        lambda: text in log_text(path),
        timeout,
        f"{text!r} in {path}",
        describe=lambda: f"it ends:\n{log_text(path)[-2000:]}",
    )


def wait_for_line(path: Path, pattern: str, timeout: float = 30.0) -> re.Match[str]:
    """Poll a log file until the regular expression ``pattern`` matches in it; the match."""
    return wait_for(
        lambda: re.search(pattern, log_text(path)),
        timeout,
        f"/{pattern}/ in {path}",
        describe=lambda: f"it ends:\n{log_text(path)[-2000:]}",
    )
