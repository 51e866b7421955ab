"""The cheap process walk TopProcesses ranks with: the same figures, names and users
psutil gives for the same processes, and the name service asked once per uid."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from fructosa.sensors import proc_table
from fructosa.sensors.proc_table import UserNames

NAME_ITSELF = "import ctypes; ctypes.CDLL(None).prctl(15, {name!r}.encode(), 0, 0, 0)\n"
ODD_NAME = "a) (b c) 1 2"
"""A name with spaces and parentheses: the fields after it must still be found."""


@pytest.fixture
def odd_process() -> Iterator[int]:
    code = NAME_ITSELF.format(name=ODD_NAME) + "print('ready', flush=True)\nimport time\ntime.sleep(120)\n"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        yield process.pid
    finally:
        process.kill()  # by its pid: only what this test started
        process.wait(timeout=10)


def test_stat_of_this_process_matches_psutil() -> None:
    stat = proc_table.read_stat(os.getpid())
    assert stat is not None
    process = psutil.Process()
    times = process.cpu_times()
    assert stat.cpu_seconds == pytest.approx(times.user + times.system, abs=0.5)
    assert stat.rss == pytest.approx(process.memory_info().rss, rel=0.2)
    boot = psutil.boot_time()
    assert boot + stat.started / proc_table.CLOCK_TICKS == pytest.approx(process.create_time(), abs=0.02)
    assert proc_table.real_uid(os.getpid()) == process.uids().real
    assert proc_table.name_of(stat) == process.name()


def test_every_process_is_walked_and_named_as_psutil_names_it() -> None:
    walked = {stat.pid: stat for stat in proc_table.all_stats()}
    assert os.getpid() in walked and 1 in walked
    assert len(walked) >= len(psutil.pids()) // 2  # processes come and go on a busy machine
    compared = 0
    for pid in walked:
        try:
            process = psutil.Process(pid)
            before = process.name()
            stat = proc_table.read_stat(pid)
            after = process.name()
        except psutil.Error:
            continue  # ended meanwhile
        if stat is None or before != after:
            continue  # ended, or renamed itself meanwhile (kernel workers name their current work queue)
        assert proc_table.name_of(stat) == before, pid
        compared += 1
    assert compared >= 1


def test_a_name_with_spaces_and_parentheses_keeps_the_fields_after_it(odd_process: int) -> None:
    stat = proc_table.read_stat(odd_process)
    assert stat is not None
    assert proc_table.name_of(stat) == psutil.Process(odd_process).name() == ODD_NAME
    assert stat.rss == pytest.approx(psutil.Process(odd_process).memory_info().rss, rel=0.2)
    assert stat.rss > 0


def test_an_ended_process_reads_as_none() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)
    assert proc_table.read_stat(process.pid) is None
    assert proc_table.real_uid(process.pid) is None


def test_user_names_asked_once_per_uid_until_they_age(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    class Entry:
        def __init__(self, name: str) -> None:
            self.pw_name = name

    def getpwuid(uid: int) -> Entry:
        asked.append(uid)
        if uid == 4242:
            raise KeyError(uid)
        return Entry(f"user{uid}")

    monkeypatch.setattr(proc_table.pwd, "getpwuid", getpwuid)
    clock = [1000.0]
    monkeypatch.setattr(proc_table.time, "monotonic", lambda: clock[0])
    names = UserNames(ttl=600.0)
    assert [names(0), names(1000), names(0), names(4242), names(4242)] == ["user0", "user1000", "user0", "4242", "4242"]
    assert asked == [0, 1000, 4242]
    clock[0] += 601.0
    assert names(0) == "user0"
    assert asked == [0, 1000, 4242, 0]
