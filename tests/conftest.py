"""Shared fixtures: a real carbon-cache per test, on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.carbon import CarbonCache


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run without per-test timeouts: a hung daemon must fail a test, not stall the suite."""
    if not config.pluginmanager.hasplugin("timeout"):
        raise pytest.UsageError("pytest-timeout is not installed: run `bash scripts/setup-env` (it installs .[test])")


@pytest.fixture
def carbon(tmp_path: Path) -> Iterator[CarbonCache]:
    with CarbonCache(tmp_path / "carbon") as cache:
        yield cache
