"""Shared by the dashboard tests and tests/dashboards/regenerate.py.

Golden files: ``golden/`` is what ``make-fructosa-dashboard`` writes for
``hosts.ini`` with :data:`GOLDEN_ARGS` (non-default options, so the
defaults are covered by the examples in the top-level ``dashboards/``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from pathlib import Path

from grafanalib.core import Dashboard

from fructosa.dashboards.panels import GraphiteTarget

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HOSTS_FILE = HERE / "hosts.ini"
GOLDEN_DIR = HERE / "golden"
EXAMPLES_DIR = REPO / "dashboards"
SENSOR_CASES = REPO / "tests" / "sensors" / "testcases"
GOLDEN_ARGS = ["-s", "compute", "--cluster", "example", "--prefix", "fructosa", "--time-from", "6h", "--refresh", "30s",
               "--gpu-section", "gpu"]  # fmt: skip


def json_panels(dashboard: dict) -> Iterator[dict]:
    """Every panel of dashboard JSON, those inside collapsed rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def model_targets(dashboard: Dashboard) -> Iterator[tuple[str, GraphiteTarget]]:
    """``(panel title, target)`` of every Graphite target of a grafanalib dashboard."""
    for panel in dashboard._iter_panels():
        for target in panel.targets:
            assert isinstance(target, GraphiteTarget), f"{panel.title}: {target!r} is not a GraphiteTarget"
            yield panel.title, target


def expand_braces(pattern: str) -> list[str]:
    """Graphite's ``{a,b}`` alternatives, as separate patterns."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    return [
        expanded
        for choice in match.group(1).split(",")
        for expanded in expand_braces(pattern[: match.start()] + choice + pattern[match.end() :])
    ]


def glob_matches(pattern: str, path: str) -> bool:
    """Whether a Graphite glob (no braces) matches a path, node by node."""
    nodes, parts = pattern.split("."), path.split(".")
    if len(nodes) != len(parts):
        return False
    return all(fnmatch.fnmatchcase(part, node) for node, part in zip(nodes, parts, strict=True))


def golden_sensor_paths() -> dict[str, set[str]]:
    """Paths each sensor sends in its golden cases (host ``node01``)."""
    paths: dict[str, set[str]] = {}
    for expected in SENSOR_CASES.glob("*/*/expected.out"):
        sensor = expected.parent.parent.name
        lines = expected.read_text(encoding="utf-8").splitlines()
        paths.setdefault(sensor, set()).update(line.split()[0] for line in lines if not line.startswith("#"))
    return paths
