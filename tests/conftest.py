"""Shared fixtures (a real carbon-cache per test, on free loopback ports) and how pytest-xdist shares the tests out.

``bash scripts/test`` runs the suite on several pytest-xdist workers with ``--dist loadgroup``: the tests
mostly wait on real processes (intervals, daemons starting), so they overlap well even on two cores.
Every test is its own unit of work, except that :func:`pytest_collection_modifyitems` keeps together
what must not be split:

- every test of a module that runs a real Slurm (tests/support/slurm.py): the ``slurm`` group, on one
  worker, one cluster after another (SlurmCluster also waits for any other cluster of the machine);
- the tests that share a module-scoped fixture (a daemon stack, a browser): one group per module, so the
  fixture starts once, as in a serial run.

A test already marked ``@pytest.mark.xdist_group(NAME)`` keeps its group. ``slow`` tests are handed
out first, so that none of them starts last and alone.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.carbon import CarbonCache
from tests.support.slurm import SlurmCluster

SLURM_GROUP = "slurm"


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run without per-test timeouts: a hung daemon must fail a test, not stall the suite.

    A shell without job control (a script's ``&``, ``nohup``, some CI runners) starts the tests with
    Ctrl-C (SIGINT) ignored, and every program they start would inherit that: ``fructosa-tail`` would
    then never see the Ctrl-C its tests send. Python's own handler is put back first (pytest's workers,
    started later, inherit it), so children start with SIGINT's default as from a terminal.
    """
    if not config.pluginmanager.hasplugin("timeout"):
        raise pytest.UsageError("pytest-timeout is not installed: run `bash scripts/setup-env` (it installs .[test])")
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def xdist_group_of(item: pytest.Item) -> str | None:
    """The group ``item`` must run in (on one worker, one test after another), None when it may run anywhere."""
    module = getattr(item, "module", None)
    if module is not None and getattr(module, "SlurmCluster", None) is SlurmCluster:
        return SLURM_GROUP
    fixtures = getattr(item, "_fixtureinfo", None)
    if fixtures is not None:
        for name in fixtures.names_closure:
            definitions = fixtures.name2fixturedefs.get(name, ())
            if definitions and definitions[-1].scope == "module":
                return item.nodeid.split("::")[0]
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = xdist_group_of(item)
            if group is not None:
                item.add_marker(pytest.mark.xdist_group(group))
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: every worker sorts the same way
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: otherwise as collected


@pytest.hookimpl(trylast=True)  # after pytest-xdist tagged the groups' tests
def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse a parallel run whose groups pytest-xdist could not keep together (it fails silently)."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(
            f"pytest-xdist did not group {lost[0]} (and {len(lost) - 1} more) with pytest {pytest.__version__}: "
            "run `bash scripts/setup-env` (it installs the versions of .[test] that work together)"
        )


@pytest.fixture
def carbon(tmp_path: Path) -> Iterator[CarbonCache]:
    with CarbonCache(tmp_path / "carbon") as cache:
        yield cache
