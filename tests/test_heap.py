"""heap.give_back_free_heap trims only after a start-up that compiled modules: a fresh interpreter that reads
every module from its bytecode cache has nothing worth the ``_ctypes`` library in glibc's heap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import probe_package.part
from fructosa import heap
print(json.dumps({"compiled": heap.compiled_at_start_up("probe_package")}))
"""


def probe(packages: Path, write_bytecode: bool) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    if not write_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONPYCACHEPREFIX", None)
    result = subprocess.run([sys.executable, "-c", PROBE, str(packages), str(REPO)],
                            capture_output=True, text=True, timeout=60, env=env, check=True)  # fmt: skip
    return json.loads(result.stdout)


def make_package(tmp_path: Path) -> Path:
    package = tmp_path / "probe_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "part.py").write_text("VALUE = 1\n")
    return tmp_path


def old_bytecode(packages: Path) -> None:
    """Every cache file of the package dated a minute back: written by an earlier process, not this one."""
    for cached in packages.rglob("*.pyc"):
        stat = cached.stat()
        os.utime(cached, (stat.st_atime - 60, stat.st_mtime - 60))


def test_no_bytecode_cache_means_compiled_at_start_up(tmp_path: Path) -> None:
    packages = make_package(tmp_path)
    assert probe(packages, write_bytecode=False)["compiled"] is True
    assert not list(packages.rglob("*.pyc"))


def test_bytecode_written_by_this_process_means_compiled(tmp_path: Path) -> None:
    packages = make_package(tmp_path)
    assert probe(packages, write_bytecode=True)["compiled"] is True
    assert list(packages.rglob("*.pyc"))


def test_bytecode_from_an_earlier_process_means_nothing_to_trim(tmp_path: Path) -> None:
    packages = make_package(tmp_path)
    probe(packages, write_bytecode=True)
    old_bytecode(packages)
    assert probe(packages, write_bytecode=True)["compiled"] is False
