"""Shared fixtures: a real carbon-cache per test, on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.carbon import CarbonCache


@pytest.fixture
def carbon(tmp_path: Path) -> Iterator[CarbonCache]:
    with CarbonCache(tmp_path / "carbon") as cache:
        yield cache
