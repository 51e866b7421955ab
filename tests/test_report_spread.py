"""lmaster's periodic report spread over the event loop (fructosa.master.report.Reporter.report_spread).

With thousands of agents the report goes through them in steps, builds each
step's liveness as one block from paths cached per agent, and leaves the
status file to a worker thread. These tests check that it reports exactly
what the all-at-once :meth:`Reporter.report` reports, that the event loop
runs between its steps, that the file is written off the loop, and that a
report cancelled at shutdown cannot overwrite the last one.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fructosa import daemon
from fructosa.config import MasterConfig
from fructosa.master import report as report_module
from fructosa.master.agents import AgentLink, AgentState, AgentTable
from fructosa.master.flow import Flow
from fructosa.master.report import AGENTS_PER_STEP, Reporter
from fructosa.master.server import ServerCounters
from fructosa.sinks import Sink
from fructosa.wire.blocks import Block

TIMEOUT = 30.0
AGENTS = 2 * AGENTS_PER_STEP + 37  # three steps, the last one partial


class KeepingSink(Sink):
    """Keeps every block it is given, safe at once."""

    name = "keeping"

    def __init__(self) -> None:
        self.blocks: list[Block] = []

    def submit(self, block: Block, on_safe: Any = None) -> None:
        self.blocks.append(block)
        if on_safe is not None:
            on_safe()

    def datapoints(self) -> list[tuple[str, tuple[float, float]]]:
        return [point for block in self.blocks for point in block.datapoints()]

    def stats(self) -> dict[str, int]:
        return {"datapoints": sum(map(len, self.blocks))}  # the same whether in one block or several

    async def run(self) -> None:
        pass

    async def close(self, timeout: float) -> None:
        pass


def run(scenario: Any) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))


def many_agents(now: float) -> AgentTable:
    """A table of varied agents: up, silent too long, disconnected, never sent data, two connections."""
    table = AgentTable()
    for index in range(AGENTS):
        host = f"node{index:05}.cluster.example"  # liveness paths use the short name
        connection = AgentLink(address=f"10.0.{index // 250}.{index % 250}:4000", agent="lagent test",
                               heartbeat_interval=10.0, connected_since=now - 100)  # fmt: skip
        at = now - (60.0 if index % 7 == 0 else 3.0)  # every seventh silent for six heartbeats: down
        state = table.heard(host, connection, None, at)
        if index % 5:
            state.last_data, state.samples, state.backlog = at - 0.25, 20 * index, index % 3
        if index % 11 == 0:
            table.detach(state, connection, at)
        if index % 13 == 0:
            table.heard(host, AgentLink(address="10.9.9.9:1", heartbeat_interval=10.0, connected_since=at), None, at)
    return table


def reporter_of(table: AgentTable, sink: KeepingSink, status_file: Path) -> Reporter:
    config = MasterConfig(path="test", self_metrics=False, self_metrics_interval=10.0)
    return Reporter(config, table, Flow([sink]), ServerCounters(connections=3), status_file=str(status_file))


def without_write_time(status_file: Path) -> dict:
    status = json.loads(status_file.read_text())
    del status["written"]
    return status


def test_the_spread_report_reports_what_the_report_at_once_reports(tmp_path: Path) -> None:
    now = time.time()
    at_once_sink, spread_sink = KeepingSink(), KeepingSink()
    at_once = reporter_of(many_agents(now), at_once_sink, tmp_path / "at_once")
    spread = reporter_of(many_agents(now), spread_sink, tmp_path / "spread")
    spread.started = at_once.started

    at_once.report(now)
    run(lambda: spread.report_spread(now))

    assert len(spread_sink.blocks) == 3  # one liveness block per step
    assert spread_sink.datapoints() == at_once_sink.datapoints()
    paths = [path for path, _ in at_once_sink.datapoints()]
    assert "node00000.fructosa.up" in paths and "node00001.fructosa.seconds_since_data" in paths
    assert "node00000.fructosa.seconds_since_data" not in paths  # it never sent data
    up = {path: value for path, (_, value) in at_once_sink.datapoints() if path.endswith(".up")}
    assert up["node00007.fructosa.up"] == 0.0 and up["node00001.fructosa.up"] == 1.0
    assert up["node00011.fructosa.up"] == 0.0 and up["node00013.fructosa.up"] == 1.0
    since = dict(at_once_sink.datapoints())["node00001.fructosa.seconds_since_data"]
    assert since == (now, 3.2)  # round(3.25, 1)

    written = without_write_time(tmp_path / "spread")
    assert written == without_write_time(tmp_path / "at_once")
    assert len(written["agents"]) == AGENTS and written["agents"][13]["connections"] == 2
    assert written["report"].splitlines()[1] == f"{AGENTS} agents ({sum(up.values()):.0f} up):"


def test_the_spread_report_announces_liveness_changes_once(tmp_path: Path) -> None:
    now = time.time()
    table = many_agents(now - 100)  # then all of them fell silent
    heard: list[tuple[str, bool]] = []
    table.listeners.append(lambda state, up, when: heard.append((state.host, up)))
    reporter = reporter_of(table, KeepingSink(), tmp_path / "status")
    run(lambda: reporter.report_spread(now))
    run(lambda: reporter.report_spread(now + 1))
    was_up = [state.host for state in many_agents(now - 100) if state.announced_up]
    assert len(was_up) > AGENTS // 2
    assert sorted(heard) == sorted((host, False) for host in was_up)  # each went down, and was told so once


def test_liveness_paths_are_made_once_per_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    made: list[str] = []
    original = report_module.liveness_paths

    def counting(state: AgentState) -> tuple[bytes, bytes]:
        made.append(state.host)
        return original(state)

    monkeypatch.setattr(report_module, "liveness_paths", counting)
    table = many_agents(now)
    reporter = reporter_of(table, KeepingSink(), tmp_path / "status")
    for later in range(3):
        run(lambda later=later: reporter.report_spread(now + later))
    assert sorted(made) == sorted(state.host for state in table)
    assert table.get("node00002.cluster.example").liveness_paths == (
        b"node00002.fructosa.up",
        b"node00002.fructosa.seconds_since_data",
    )


def test_the_event_loop_runs_between_steps_and_the_file_is_written_off_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: list[threading.Thread] = []

    def recording_write(path: str, status: dict) -> None:
        writers.append(threading.current_thread())
        daemon.write_status(path, status)

    monkeypatch.setattr(report_module, "write_status", recording_write)
    now = time.time()
    sink = KeepingSink()
    reporter = reporter_of(many_agents(now), sink, tmp_path / "status")

    async def scenario() -> set[int]:
        blocks_seen: set[int] = set()
        reporting = asyncio.create_task(reporter.report_spread(now))
        while not reporting.done():
            await asyncio.sleep(0)
            blocks_seen.add(len(sink.blocks))
        await reporting
        return blocks_seen

    assert run(scenario) >= {1, 2, 3}  # other tasks ran after each step's liveness block, not only at the end
    assert len(writers) == 1 and writers[0] is not threading.main_thread()
    assert len(json.loads((tmp_path / "status").read_text())["agents"]) == AGENTS


def test_a_report_cancelled_while_writing_cannot_overwrite_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    entered = threading.Event()
    done: list[float] = []

    def slow_write(path: str, status: dict) -> None:
        if threading.current_thread() is not threading.main_thread():  # the periodic report's worker
            entered.set()
            assert release.wait(TIMEOUT)
        daemon.write_status(path, status)
        done.append(status["agents"][0]["last_seen"])

    monkeypatch.setattr(report_module, "write_status", slow_write)
    now = time.time()
    table = many_agents(now)
    reporter = reporter_of(table, KeepingSink(), tmp_path / "status")
    first = table.get("node00000.cluster.example")
    assert first is not None
    seen_before = first.last_frame

    async def scenario() -> None:
        reporting = asyncio.create_task(reporter.report_spread(now))
        deadline = time.monotonic() + TIMEOUT
        while not entered.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert entered.is_set()
        reporting.cancel()  # as lmaster's shutdown does, then reports once more
        await asyncio.gather(reporting, return_exceptions=True)
        first.last_frame = now + 5  # changed since the cancelled report
        threading.Timer(0.2, release.set).start()
        reporter.report(now + 5)

    run(scenario)
    assert done == [seen_before, now + 5]  # the cancelled report's file first, the last report's last
    assert json.loads((tmp_path / "status").read_text())["agents"][0]["last_seen"] == now + 5


def test_the_status_file_is_encoded_in_chunks_as_json_would_in_one_go(tmp_path: Path) -> None:
    rows = [{"host": f"n{index}", "up": index % 2 == 0, "rate": index / 3, "note": 'é\n"'} for index in range(1001)]
    for status in ({}, {"agents": []}, {"agents": rows, "sinks": {"graphite": {"blocks": 2}}, "report": "a\nb"}):
        assert "".join(daemon.status_json_chunks(status)) == json.dumps(status, separators=(",", ":"))
    daemon.write_status(str(tmp_path / "status"), {"agents": rows})
    assert json.loads((tmp_path / "status").read_text())["agents"] == rows
