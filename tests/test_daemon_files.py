"""Pidfile and status file: never written through a symlink someone planted."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from fructosa import daemon


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file a planted symlink points at; it must stay as it is."""
    path = tmp_path / "victim"
    path.write_text("precious\n")
    return path


def test_pidfile_that_is_a_symlink_is_refused(tmp_path: Path, victim: Path) -> None:
    pidfile = tmp_path / "lagent.pid"
    pidfile.symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        daemon.PidFile(str(pidfile)).acquire()
    assert victim.read_text() == "precious\n"
    assert daemon.running_pid(str(pidfile)) is None
    assert daemon.read_pid(str(pidfile)) is None


def test_dangling_symlink_is_not_created_through(tmp_path: Path) -> None:
    pidfile = tmp_path / "lagent.pid"
    target = tmp_path / "elsewhere"
    pidfile.symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        daemon.PidFile(str(pidfile)).acquire()
    assert not target.exists()


def test_pidfile_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    pidfile = tmp_path / "lagent.pid"
    os.mkfifo(pidfile)
    with pytest.raises(OSError, match="not a regular file"):
        daemon.PidFile(str(pidfile)).acquire()
    assert daemon.running_pid(str(pidfile)) is None


def test_pidfile_is_claimed_and_released(tmp_path: Path) -> None:
    pidfile = daemon.PidFile(str(tmp_path / "lagent.pid"))
    pidfile.acquire()
    try:
        assert daemon.read_pid(pidfile.path) == os.getpid()
    finally:
        pidfile.release()
    assert not os.path.exists(pidfile.path)


def test_status_file_replaces_a_symlink_instead_of_following_it(tmp_path: Path, victim: Path) -> None:
    status = tmp_path / "lagent.status.json"
    status.symlink_to(victim)
    (tmp_path / "lagent.status.json.tmp").symlink_to(victim)  # the name the old code wrote to
    daemon.write_status(str(status), {"report": "fine"})
    assert victim.read_text() == "precious\n"
    assert not status.is_symlink()
    assert json.loads(status.read_text())["report"] == "fine"
    assert stat.S_IMODE(status.stat().st_mode) == 0o644
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "lagent.status.json",
        "lagent.status.json.tmp",
        "victim",
    ], "a temporary file was left behind"
    assert daemon.read_status(str(status), os.getpid()) is not None


def test_status_temporary_names_are_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names: list[str] = []
    real_replace = os.replace

    def recording_replace(source: str, destination: str) -> None:
        names.append(os.path.basename(source))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", recording_replace)
    for _ in range(3):
        daemon.write_status(str(tmp_path / "s.json"), {})
    assert len(set(names)) == 3 and all(name.startswith(".s.json.") for name in names)
