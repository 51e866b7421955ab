"""Rewrite the golden dashboards and the examples after an intended change.

    .venv/bin/python tests/dashboards/regenerate.py

Review the diff (``git diff tests/dashboards/golden dashboards``) before
committing: the golden files are what users import into Grafana.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from grafanalib._gen import generate_dashboard  # noqa: E402

from fructosa.dashboards.cli import main  # noqa: E402
from tests.dashboards.helpers import EXAMPLES_DIR, GOLDEN_ARGS, GOLDEN_DIR, HOSTS_FILE  # noqa: E402


def regenerate() -> int:
    for old in GOLDEN_DIR.glob("*.json"):
        old.unlink()
    status = main([str(HOSTS_FILE), *GOLDEN_ARGS, "-o", str(GOLDEN_DIR)])
    for source in sorted(EXAMPLES_DIR.glob("*.dashboard.py")):
        output = source.with_name(source.name.removesuffix(".dashboard.py") + ".json")
        status = status or generate_dashboard([str(source), "-o", str(output)])
    return status


if __name__ == "__main__":
    sys.exit(regenerate())
