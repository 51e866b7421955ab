"""lagent's status file and self-measurement: what ``lagent status`` shows, how fresh it is, never torn.

The status file is rewritten at a report that finds a sign of trouble changed, and otherwise once every
``STATUS_MAX_AGE`` seconds' worth of reports; these tests pin both halves of that promise, the fields
it carries, and that a reader never sees a half-written file.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from fructosa import daemon
from fructosa.agent import Agent
from fructosa.agent import report as report_module
from fructosa.agent.report import STATUS_EAGER_REPORTS, STATUS_MAX_AGE, STATUS_WATCHED
from fructosa.config import load_agent_config
from fructosa.selfstats import ProcessUsage, seconds_since_start

TIMEOUT = 60

SELF_METRICS = {
    "samples_per_second", "queued_samples", "unacknowledged_batches", "spool_batches", "spool_bytes",
    "dropped_samples", "batches_sent", "reconnects", "connected", "cpu_percent", "rss_bytes", "interval",
}  # fmt: skip
"""``HOST.fructosa.agent.*``: their names are part of every dashboard and alarm built on them."""


def agent_config(tmp_path: Path, self_metrics_interval: float, sensors: str = "[sensor:CPUPercent]\ntotal = yes\n"):
    path = tmp_path / "lagent.conf"
    path.write_text(
        "[lmaster]\nhost = 127.0.0.1\nincoming data port = 9\n\n"
        f"[lagent]\nhostname = node1\nself metrics interval = {self_metrics_interval}\n\n{sensors}"
    )
    return load_agent_config(str(path))


def with_agent(tmp_path: Path, self_metrics_interval: float, scenario: Callable[[Agent, Path], None]) -> None:
    """Run ``scenario(agent, status file)`` in an event loop, the agent's sensors scheduled but never connected."""
    config = agent_config(tmp_path, self_metrics_interval)
    status_file = tmp_path / "lagent.status.json"

    async def run() -> None:
        agent = Agent(config, status_file=str(status_file))
        agent.scheduler.apply(config.sensors)
        try:
            scenario(agent, status_file)
        finally:
            await agent.scheduler.stop()
            agent.scheduler.shutdown()

    asyncio.run(asyncio.wait_for(run(), TIMEOUT))


def report(agent: Agent) -> None:
    """One self-report, as the reporter's timer makes it."""
    agent.reporter._report(lambda sensor, value: None)


def written_at(status_file: Path) -> float:
    return json.loads(status_file.read_text())["written"]


def test_the_status_file_carries_every_self_metric_and_the_line_lagent_status_prints(tmp_path: Path) -> None:
    def scenario(agent: Agent, status_file: Path) -> None:
        report(agent)
        status = json.loads(status_file.read_text())
        assert status["pid"] == os.getpid()
        assert time.time() - TIMEOUT < status["written"] <= time.time()
        assert set(status["agent"]) == SELF_METRICS
        assert status["agent"]["interval"] == {"CPUPercent": 10.0}
        assert status["agent"]["connected"] is False
        assert status["agent"]["rss_bytes"] > 1e6
        shown = daemon.read_status(str(status_file), os.getpid())
        assert shown is not None
        line, age = shown.split("\n")
        assert line.startswith("host node1, NOT connected to lmaster 127.0.0.1:9; 1 sensors, ")
        for part in ("samples/s", "0 queued", "0 unacknowledged", "0 spooled (0 bytes)", "0 dropped", "CPU ", "RSS "):
            assert part in line
        assert age.startswith("(status as of ") and age.endswith(" s ago)")

    with_agent(tmp_path, 10, scenario)


def reports_that_write(agent: Agent, status_file: Path, reports: int) -> list[int]:
    """Make ``reports`` reports; the indices of those that rewrote the status file."""
    written_by: list[int] = []
    last = written_at(status_file) if status_file.exists() else None
    for index in range(reports):
        report(agent)
        now = written_at(status_file)
        if now != last:
            written_by.append(index)
            last = now
    return written_by


def expected_writes(reports: int, most: int) -> list[int]:
    """The reports that write, from a start or reload on, with nothing watched changing: the first
    STATUS_EAGER_REPORTS, then one every ``most``."""
    last_eager = STATUS_EAGER_REPORTS - 1
    return [index for index in range(reports) if index <= last_eager or (index - last_eager) % most == 0]


@pytest.mark.parametrize("self_metrics_interval", [1, 7, 10, 30, 60, 100])
def test_the_status_file_is_never_older_than_its_promise(tmp_path: Path, self_metrics_interval: float) -> None:
    """The first reports after the start write the file; after them, with nothing watched changing,
    a report rewrites it once its age would pass STATUS_MAX_AGE (or one interval, when that is
    longer), and the reports in between leave it alone."""
    most = max(1, int(STATUS_MAX_AGE // self_metrics_interval))
    assert most * self_metrics_interval <= max(STATUS_MAX_AGE, self_metrics_interval)
    assert STATUS_EAGER_REPORTS >= 1

    def scenario(agent: Agent, status_file: Path) -> None:
        written_by = reports_that_write(agent, status_file, STATUS_EAGER_REPORTS + 3 * most)
        assert written_by == expected_writes(STATUS_EAGER_REPORTS + 3 * most, most)
        gaps = {later - earlier for earlier, later in zip(written_by, written_by[1:], strict=False)}
        assert max(gaps) == most, "never longer than STATUS_MAX_AGE between two writes"

    with_agent(tmp_path, self_metrics_interval, scenario)


def test_a_reload_writes_the_status_file_at_its_first_reports(tmp_path: Path) -> None:
    most = int(STATUS_MAX_AGE // 10)
    reports = STATUS_EAGER_REPORTS + 2 * most
    (tmp_path / "again").mkdir()
    again = agent_config(tmp_path / "again", 10)

    def scenario(agent: Agent, status_file: Path) -> None:
        assert reports_that_write(agent, status_file, reports) == expected_writes(reports, most)
        agent.reload(again)
        assert reports_that_write(agent, status_file, reports) == expected_writes(reports, most)

    with_agent(tmp_path, 10, scenario)


def test_a_watched_change_is_in_the_status_file_at_the_next_report(tmp_path: Path) -> None:
    assert {"connected", "reconnects", "dropped_samples", "spool_batches", "interval"} <= set(STATUS_WATCHED)

    def scenario(agent: Agent, status_file: Path) -> None:
        reports_that_write(agent, status_file, STATUS_EAGER_REPORTS + 1)  # past the first reports
        first = written_at(status_file)
        report(agent)
        assert written_at(status_file) == first, "nothing watched changed: the file stays"

        agent.queue.dropped += 3
        report(agent)
        assert json.loads(status_file.read_text())["agent"]["dropped_samples"] == 3
        assert " 3 dropped" in (daemon.read_status(str(status_file), os.getpid()) or "")

        agent.sender.session.connected.set()
        report(agent)
        status = json.loads(status_file.read_text())
        assert status["agent"]["connected"] is True and status["agent"]["dropped_samples"] == 3
        assert "host node1, connected to lmaster" in status["report"]

        agent.sender.session.connects += 1
        report(agent)
        assert json.loads(status_file.read_text())["agent"]["reconnects"] == 1

    with_agent(tmp_path, 10, scenario)


def test_a_status_file_that_could_not_be_written_is_written_at_the_next_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def scenario(agent: Agent, status_file: Path) -> None:
        reports_that_write(agent, status_file, STATUS_EAGER_REPORTS + 1)  # past the first reports
        before = written_at(status_file)
        real_write = report_module.write_status

        def full_disk(path: str, status: dict) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(report_module, "write_status", full_disk)
        agent.queue.dropped += 1
        report(agent)
        assert written_at(status_file) == before
        monkeypatch.setattr(report_module, "write_status", real_write)
        report(agent)
        assert json.loads(status_file.read_text())["agent"]["dropped_samples"] == 1

    with_agent(tmp_path, 10, scenario)


def test_self_metrics_follow_a_reload_and_an_adaptive_switch(tmp_path: Path) -> None:
    adaptive = "[sensor:CPUPercent]\ntotal = yes\ntime_interval = 60\n"
    adaptive += "fast time_interval = 5\nfast when = CPUPercent.total > 80\n"
    config = agent_config(tmp_path, 10, adaptive)
    more = agent_config(tmp_path, 10, adaptive + "[sensor:VirtualMemory]\ntime_interval = 2\n")

    async def scenario() -> None:
        agent = Agent(config)
        agent.scheduler.apply(config.sensors)
        try:
            assert agent.self_metrics(0.0)["interval"] == {"CPUPercent": 60}
            agent.record("CPUPercent", {"total": 95.0})  # the condition holds: fast
            assert agent.self_metrics(0.0)["interval"] == {"CPUPercent": 5}
            agent.reload(more)
            assert agent.self_metrics(0.0)["interval"] == {"CPUPercent": 5, "VirtualMemory": 2}
            agent.reload(config)
            assert agent.self_metrics(0.0)["interval"] == {"CPUPercent": 5}
        finally:
            await agent.scheduler.stop()
            agent.scheduler.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))


def test_a_reader_never_sees_a_torn_status_file(tmp_path: Path) -> None:
    """Small (one write) and large (chunked, many writes) statuses replace each other while a reader
    reads: every read is one whole status, never a mix or a prefix."""
    path = tmp_path / "lmaster.status.json"
    large = {"agents": [{"host": f"node{index:05d}", "note": "x" * 40} for index in range(3000)], "report": "large"}
    small = {"agents": [], "report": "small"}
    daemon.write_status(str(path), small)
    done = threading.Event()
    reads: list[str] = []
    failures: list[str] = []

    def reader() -> None:
        while not done.is_set():
            text = path.read_text()
            try:
                status = json.loads(text)
            except ValueError:
                failures.append(text[:80] + "..." + text[-80:])
                continue
            expected = large if status["report"] == "large" else small
            if status["agents"] != expected["agents"]:
                failures.append(f"{status['report']} with {len(status['agents'])} agents")
            reads.append(status["report"])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and (reads.count("large") < 20 or reads.count("small") < 20):
            daemon.write_status(str(path), large)
            daemon.write_status(str(path), small)
    finally:
        done.set()
        thread.join(TIMEOUT)
    assert not failures, failures[:3]
    assert reads.count("large") >= 20 and reads.count("small") >= 20
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["lmaster.status.json"], "a temporary file was left"


def test_a_failed_write_keeps_the_previous_status_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lagent.status.json"
    daemon.write_status(str(path), {"report": "before"})

    def failing_write(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(OSError):
        daemon.write_status(str(path), {"report": "after"})
    monkeypatch.undo()
    assert json.loads(path.read_text())["report"] == "before"
    assert [entry.name for entry in tmp_path.iterdir()] == ["lagent.status.json"]


def test_status_is_encoded_as_json_would_in_one_go(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    for status in ({}, {"report": 'é\n"', "agent": {"interval": {"CPUPercent": 1.5}}}, {"agents": list(range(1000))}):
        daemon.write_status(str(path), status)
        text = path.read_text(encoding="ascii")
        written = json.loads(text)
        document = {"pid": os.getpid(), "written": written["written"], **status}
        assert text == json.dumps(document, separators=(",", ":"))


def test_process_usage_reads_what_psutil_reads() -> None:
    usage = ProcessUsage()
    process = psutil.Process()
    sample = usage.sample()
    assert sample["rss_bytes"] == pytest.approx(process.memory_info().rss, rel=0.05)
    lifetime = time.time() - process.create_time()
    assert seconds_since_start() == pytest.approx(lifetime, abs=1.5)  # psutil's boot time is whole seconds


PARENT_THEN_CHILD = """
import os, sys
from fructosa.selfstats import ProcessUsage
usage = ProcessUsage()
parent = usage.sample()["rss_bytes"]
reading, writing = os.pipe()
child = os.fork()
if child == 0:
    ballast = bytearray(64 << 20)
    ballast[::4096] = b"x" * (len(ballast) // 4096)
    os.write(writing, repr(usage.sample()["rss_bytes"]).encode())
    os._exit(0)
os.close(writing)
figure = float(os.read(reading, 100))
os.waitpid(child, 0)
print(parent, figure, usage.sample()["rss_bytes"])
"""


def test_process_usage_measures_the_process_it_runs_in_after_a_fork() -> None:
    """The daemon detaches (forks) after its reporter is made: it must then read its own memory."""
    result = subprocess.run(
        [sys.executable, "-c", PARENT_THEN_CHILD], capture_output=True, text=True, timeout=TIMEOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parent, child, parent_again = map(float, result.stdout.split())
    assert child >= parent + 60e6, "the child read its parent's memory"
    assert parent_again < child - 40e6
