"""lmaster's own logic, part by part, in-process: the agent table, the flow to
sinks and taps, duplicate detection, building and reconfiguring sinks, the
status report, and one real listening Master served over loopback.

The sinks here are real :class:`~fructosa.sinks.Sink` implementations that
keep what they get and say "safe" when the test decides, so the order of
acknowledgements can be checked exactly; carbon-backed behaviour is tested in
test_carbon_sink, test_delivery and test_end_to_end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from fructosa import checks
from fructosa.config import GraphiteConfig, LinkConfig, MasterConfig, UpstreamConfig
from fructosa.daemon import write_status
from fructosa.graphite_paths import FlattenBudget
from fructosa.master import AgentLink, AgentState, AgentTable, Flow, Master, decode_batch, heartbeat_backlog
from fructosa.master.flow import Sender
from fructosa.master.report import Reporter
from fructosa.master.server import ServerCounters
from fructosa.master.slots import ConnectionSlots
from fructosa.programs import listening_sockets
from fructosa.sinks import Sink
from fructosa.sinks.build import build_sinks
from fructosa.sinks.carbon import CarbonPickleSink
from fructosa.sinks.cluster import CarbonClusterSink
from fructosa.sinks.ring import Destination
from fructosa.sinks.upstream import UpstreamSink
from fructosa.taps import Tap
from fructosa.taps.latest import LatestValues
from fructosa.wire import auth, protocol
from fructosa.wire.blocks import Block
from fructosa.wire.session import BatchLedger, open_session, read_frame
from tests.support.tls import Pki, pki_or_skip

TIMEOUT = 20.0


def run(scenario: Callable[[], Coroutine[Any, Any, Any]], timeout: float = TIMEOUT) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), timeout))


class HeldSink(Sink):
    """Keeps every block; says "safe" only when :meth:`release` is called (or at once with ``hold=False``)."""

    def __init__(self, name: str = "held", hold: bool = True) -> None:
        self.name = name
        self.hold = hold
        self.blocks: list[Block] = []
        self.waiting: list[Callable[[], None]] = []
        self.configs: list[MasterConfig] = []

    def submit(self, block: Block, on_safe: Callable[[], None] | None = None) -> None:
        self.blocks.append(block)
        if on_safe is not None:
            if self.hold:
                self.waiting.append(on_safe)
            else:
                on_safe()

    def release(self) -> None:
        waiting, self.waiting = self.waiting, []
        for on_safe in waiting:
            on_safe()

    def paths(self) -> list[str]:
        return [path for block in self.blocks for path in block.path_list()]

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def close(self, timeout: float) -> None:
        self.release()

    def stats(self) -> dict[str, int]:
        return {"blocks": len(self.blocks)}

    def reconfigure(self, cfg: MasterConfig) -> None:
        self.configs.append(cfg)


class RecordingTap(Tap):
    name = "recording"

    def __init__(self) -> None:
        self.seen: list[tuple[list[str], str | None]] = []
        self.closed = False

    def observe(self, block: Block, host: str | None) -> None:
        self.seen.append((block.path_list(), host))

    async def close(self) -> None:
        self.closed = True


class BrokenTap(Tap):
    name = "broken"

    def observe(self, block: Block, host: str | None) -> None:
        raise RuntimeError("a bug in a tap")


def d_frame_payload(batch: bytes, datapoints: list) -> bytes:
    return batch + Block.of(datapoints).encode()


def batch(sequence: int, session: bytes = b"s" * 16) -> bytes:
    return protocol.batch_id(session, sequence)


NODE = Sender(host="node01", address="10.0.0.1:40000", host_prefix="node01")


# -- the agent table ---------------------------------------------------------------


def link(address: str, at: float, heartbeat: float = 30.0) -> AgentLink:
    return AgentLink(address=address, agent="lagent test", heartbeat_interval=heartbeat, connected_since=at)


def connected(table: AgentTable, host: str, address: str, at: float) -> tuple[AgentState, AgentLink]:
    """A connection of ``host`` that has sent its first frame at ``at``: the host's entry, and the connection."""
    connection = link(address, at)
    return table.heard(host, connection, None, at), connection


def test_a_reconnecting_agent_keeps_its_history() -> None:
    table = AgentTable()
    first, first_link = connected(table, "node01", "10.0.0.1:1000", 100.0)
    first.samples, first.last_data, first.backlog = 42, 150.0, 7
    table.detach(first, first_link, 120.0)  # the connection ended
    assert not first.connected and not first.up(121.0) and first.last_frame == 120.0
    entry, _ = connected(table, "node01", "10.0.0.1:2000", 200.0)
    assert entry is first and table.holds(entry) and len(table) == 1
    assert (entry.samples, entry.last_data, entry.backlog) == (42, 150.0, 7)
    assert (entry.address, entry.connected, entry.connected_since, entry.last_frame) == (
        "10.0.0.1:2000", True, 200.0, 200.0
    )  # fmt: skip
    assert entry.up(201.0) and not entry.up(201.0 + 2 * entry.heartbeat_interval + 6)


def test_a_host_is_up_while_any_of_its_connections_is_live() -> None:
    """A peer borrowing a connected agent's name, sending a frame and hanging up
    (or announcing a tiny heartbeat) cannot mark the agent down."""
    table = AgentTable()
    good, honest = connected(table, "good", "10.0.0.1:1000", 100.0)
    spoof = link("10.0.0.66:4000", 110.0, heartbeat=0.01)
    assert table.heard("good", spoof, None, 110.0) is good and len(good.links) == 2
    table.detach(good, spoof, 110.5)
    assert good.connected and good.up(111.0) and good.links == [honest]
    assert not good.up(100.0 + 2 * 30.0 + 6)  # the honest connection itself must still be heard from
    assert table.heard("good", honest, good, 150.0) is good and good.up(200.0)
    table.detach(good, spoof, 151.0)  # detaching twice changes nothing
    assert good.links == [honest]
    table.detach(good, honest, 160.0)
    assert not good.connected and not good.up(160.0) and table.connected() == 0


def test_a_connection_of_a_forgotten_host_attaches_again() -> None:
    table = AgentTable(max_agents=1)
    node1, node1_link = connected(table, "node1", "10.0.0.1:1", 100.0)
    connected(table, "node2", "10.0.0.2:1", 200.0)  # the table is full: node1, the longest silent, goes
    assert table.get("node1") is None and not table.holds(node1)
    again = table.heard("node1", node1_link, node1, 300.0)
    assert table.holds(again) and again is not node1 and again.links == [node1_link] and again.up(300.0)


def test_the_table_is_bounded_and_forgets_the_longest_silent_agent() -> None:
    table = AgentTable(max_agents=3)
    states = [
        connected(table, f"node{index}", f"10.0.0.{index}:1", at) for index, at in enumerate((300.0, 100.0, 200.0))
    ]
    table.detach(*states[0], 300.0)  # disconnected agents go first, however recent
    connected(table, "node3", "10.0.0.3:1", 400.0)
    assert sorted(state.host for state in table) == ["node1", "node2", "node3"]
    connected(table, "node4", "10.0.0.4:1", 500.0)
    assert sorted(state.host for state in table) == ["node2", "node3", "node4"]  # node1 silent since 100
    assert table.connected() == 3


def test_hosts_not_heard_from_for_the_forget_time_are_forgotten() -> None:
    table = AgentTable()
    gone, gone_link = connected(table, "gone", "10.0.0.1:1", 100.0)
    table.detach(gone, gone_link, 110.0)
    quiet, _ = connected(table, "quiet", "10.0.0.2:1", 100.0)  # connected, however long silent: kept
    table.heard("recent", link("10.0.0.3:1", 500.0), None, 500.0)
    assert table.forget_silent(now=600.0, after=500.0) == []  # gone last seen 490 s ago
    assert table.forget_silent(now=611.0, after=500.0) == ["gone"]
    assert sorted(state.host for state in table) == ["quiet", "recent"] and table.holds(quiet)


def test_a_forgotten_host_leaves_the_latest_values_too() -> None:
    """Forgotten for silence or evicted from a full table: the taps drop the host, so invented names cannot
    keep the latest-value store's host rows (bounded) from honest agents."""
    latest = LatestValues()
    table = AgentTable(max_agents=2)
    flow = Flow([], [latest])
    table.forgetters.append(flow.forget)
    for host in ("gone", "evicted", "kept"):
        flow.deliver(Block.of([(f"{host}.CPUPercent.total", (100.0, 5.0))]), host)
    assert set(latest.hosts()) == {"gone", "evicted", "kept"}
    gone, gone_link = connected(table, "gone", "10.0.0.1:1", 100.0)
    table.detach(gone, gone_link, 110.0)
    assert table.forget_silent(now=700.0, after=500.0) == ["gone"]
    assert "gone" not in latest and "evicted" in latest
    evicted, evicted_link = connected(table, "evicted", "10.0.0.2:1", 200.0)
    table.detach(evicted, evicted_link, 210.0)
    connected(table, "kept", "10.0.0.3:1", 300.0)
    connected(table, "newcomer", "10.0.0.4:1", 400.0)  # the table is full: evicted, disconnected, goes
    assert table.get("evicted") is None
    assert latest.hosts() == ["kept"]


def test_known_agents_come_back_from_the_status_file(tmp_path: Path) -> None:
    status_file = str(tmp_path / "lmaster.status")
    table = AgentTable()
    connected(table, "node01", "10.0.0.1:1", 100.0)[0].last_data = 123.5
    connected(table, "node02", "10.0.0.2:1", 100.0)
    reporter = Reporter(MasterConfig(path="test"), table, Flow([]), ServerCounters(), status_file=status_file)
    write_status(status_file, reporter.status(time.time()))

    restarted = AgentTable()
    restarted.load(status_file)
    assert sorted(state.host for state in restarted) == ["node01", "node02"]
    assert restarted.get("node01").last_data == 123.5 and not restarted.get("node01").connected
    assert restarted.get("node01").last_frame == 100.0  # when it was last seen: the forget time counts from there
    liveness = dict(Reporter(MasterConfig(path="test"), restarted, Flow([]), ServerCounters()).liveness(1000.0))
    assert liveness["node01.fructosa.up"] == (1000.0, 0.0)  # a node that died meanwhile shows up = 0
    assert "node02.fructosa.seconds_since_data" not in liveness  # it never sent data

    bounded = AgentTable(max_agents=1)
    bounded.load(status_file)
    assert len(bounded) == 1
    for content in ("not json", json.dumps({"agents": [{"host": 5}, "junk", {"host": "ok", "last_data": "x"}]})):
        Path(status_file).write_text(content)
        garbage = AgentTable()
        garbage.load(status_file)  # no error: a damaged file just means an empty (or partial) table
        assert all(isinstance(state.host, str) for state in garbage)
    missing = AgentTable()
    missing.load(str(tmp_path / "missing"))
    assert len(missing) == 0


def test_heartbeat_backlog() -> None:
    assert heartbeat_backlog(b'{"queued": 5, "spooled": 2}', 0) == 7
    assert heartbeat_backlog(b"", 3) == 3
    for nonsense in (b"{", b"[1]", b'{"queued": -9}', b'{"queued": "many"}', b'{"queued": 1e999}', b"[" * 100_000):
        assert heartbeat_backlog(nonsense, 3) == 3, nonsense[:20]


# -- the flow: sinks, taps, duplicates --------------------------------------------


def test_a_batch_is_acknowledged_once_every_sink_holds_it() -> None:
    async def scenario() -> None:
        carbon, upstream = HeldSink("carbon"), HeldSink("upstream")
        flow = Flow([carbon, upstream])
        acked: list[bytes] = []
        samples = await flow.take_batch(
            protocol.DATAPOINTS, d_frame_payload(batch(1), [("node01.cpu.user", (1000.0, 1.5))]), acked.append, NODE
        )
        assert samples == 0 and carbon.paths() == upstream.paths() == ["node01.cpu.user"]
        carbon.release()
        assert acked == []  # the upstream does not hold it yet
        upstream.release()
        assert acked == [batch(1)]
        assert (flow.counters.frames, flow.counters.datapoints, flow.counters.duplicates) == (1, 1, 0)

    run(scenario)


def test_a_duplicate_is_acknowledged_once_safe_and_never_relayed_again() -> None:
    async def scenario() -> None:
        sink = HeldSink()
        flow = Flow([sink])
        first_connection: list[bytes] = []
        second_connection: list[bytes] = []
        payload = d_frame_payload(batch(7), [("node01.mem.used", (1000.0, 2.0))])
        await flow.take_batch(protocol.DATAPOINTS, payload, first_connection.append, NODE)
        await flow.take_batch(protocol.DATAPOINTS, payload, second_connection.append, NODE)  # sent again
        assert len(sink.blocks) == 1 and flow.counters.duplicates == 1
        assert first_connection == second_connection == []  # not safe yet: nobody is acknowledged
        sink.release()
        assert first_connection == second_connection == [batch(7)]
        third_connection: list[bytes] = []
        await flow.take_batch(protocol.DATAPOINTS, payload, third_connection.append, NODE)
        assert third_connection == [batch(7)]  # already safe: acknowledged at once
        assert len(sink.blocks) == 1 and flow.counters.duplicates == 2

    run(scenario)


def test_an_undecodable_batch_is_refused_and_forgotten() -> None:
    async def scenario() -> None:
        sink = HeldSink(hold=False)
        flow = Flow([sink])
        acked: list[bytes] = []
        with pytest.raises(protocol.ProtocolError, match="undecodable datapoints"):
            await flow.take_batch(protocol.DATAPOINTS, batch(3) + b"\x01\x02", acked.append, NODE)
        assert flow.ledger.lookup(("node01", batch(3))) is None and sink.blocks == []
        payload = d_frame_payload(batch(3), [("node01.x", (1000.0, 1.0))])
        await flow.take_batch(protocol.DATAPOINTS, payload, acked.append, NODE)  # the same id, now valid
        assert (
            acked == [batch(3)] and sink.paths() == ["node01.x"] and flow.ledger.lookup(("node01", batch(3))) == "safe"
        )

    run(scenario)


def test_refused_datapoints_are_counted_and_only_valid_ones_flow() -> None:
    async def scenario() -> None:
        sink, tap = HeldSink(hold=False), RecordingTap()
        flow = Flow([sink], [tap])
        acked: list[bytes] = []
        datapoints = [
            ("node01.cpu.user", (1000.0, 1.0)),
            ("node02.cpu.user", (1000.0, 1.0)),  # another host's path
            ("node01.cpu.idle", (1000.0, math.nan)),  # not a number
            ("node01.cpu.system", (1000.0, 3.0)),
        ]
        await flow.take_batch(protocol.DATAPOINTS, d_frame_payload(batch(1), datapoints), acked.append, NODE)
        assert sink.paths() == ["node01.cpu.user", "node01.cpu.system"]
        assert tap.seen == [(["node01.cpu.user", "node01.cpu.system"], "node01")]
        assert (flow.counters.datapoints, flow.counters.bad_datapoints) == (2, 2)
        assert acked == [batch(1)]  # what was refused does not hold up the rest

    run(scenario)


def test_sample_batches_are_decoded_and_bad_samples_counted() -> None:
    async def scenario() -> None:
        sink = HeldSink(hold=False)
        flow = Flow([sink])
        samples = [
            {"host": "node01", "sensor": "Load", "time": 1000.0, "value": {"1min": 0.5}},
            {"host": "node01", "sensor": "Broken", "time": "yesterday", "value": 1},
        ]
        payload = protocol.encode_samples(samples, b"s" * 16, 9)[protocol.HEADER_SIZE + 1 :]
        new = await flow.take_batch(protocol.SAMPLES, payload, lambda batch_id: None, NODE)
        assert new == 2 and sink.paths() == ["node01.Load.1min"]
        assert (flow.counters.samples, flow.counters.bad_samples) == (2, 1)

    run(scenario)


def test_taps_see_every_checked_block_and_lmasters_own_datapoints() -> None:
    async def scenario() -> None:
        sink, tap = HeldSink(), RecordingTap()
        flow = Flow([sink], [BrokenTap(), tap])
        await flow.take_batch(
            protocol.DATAPOINTS, d_frame_payload(batch(1), [("node01.a", (1000.0, 1.0))]), lambda batch_id: None, NODE
        )
        relay = Sender(host="site-lmaster", address="10.0.1.1:5000", host_prefix=None)
        relayed = [("node07.a", (1000.0, 1.0)), ("node08.a", (1000.0, 2.0))]
        await flow.take_batch(protocol.DATAPOINTS, d_frame_payload(batch(2), relayed), lambda batch_id: None, relay)
        flow.emit([("node01.fructosa.up", (1000.0, 1.0))])
        flow.emit([])  # nothing to say: nothing is sent
        assert tap.seen == [
            (["node01.a"], "node01"),
            (["node07.a", "node08.a"], "site-lmaster"),
            (["node01.fructosa.up"], None),
        ]
        assert sink.paths() == ["node01.a", "node07.a", "node08.a", "node01.fructosa.up"]  # a broken tap costs nothing

    run(scenario)


def test_without_sinks_a_batch_is_acknowledged_at_once() -> None:
    async def scenario() -> None:
        acked: list[bytes] = []
        flow = Flow([])
        await flow.take_batch(
            protocol.DATAPOINTS, d_frame_payload(batch(1), [("node01.a", (1.0, 1.0))]), acked.append, NODE
        )
        assert acked == [batch(1)]

    run(scenario)


def test_batch_ids_are_per_host_so_another_peer_cannot_claim_them() -> None:
    """A peer sending another agent's batch ids first takes nothing from it; the same host's resend is a duplicate."""

    async def scenario() -> None:
        sink = HeldSink(hold=False)
        flow = Flow([sink])
        acked: list[tuple[str, bytes]] = []
        thief = Sender(host="mallory", address="10.0.0.66:1", host_prefix="mallory")
        relay = Sender(host="relay1", address="10.0.0.7:1", host_prefix=None)
        for sender, path in ((thief, "mallory.x"), (relay, "node01.y"), (NODE, "node01.cpu"), (NODE, "node01.cpu")):
            await flow.take_batch(
                protocol.DATAPOINTS, d_frame_payload(batch(1), [(path, (1000.0, 1.0))]),
                lambda batch_id, host=sender.host: acked.append((host, batch_id)), sender,
            )  # fmt: skip
        await asyncio.sleep(0)
        assert sink.paths() == ["mallory.x", "node01.y", "node01.cpu"]
        assert flow.counters.duplicates == 1 and acked.count(("node01", batch(1))) == 2
        assert flow.ledger.lookup(("node01", batch(1))) == "safe" and flow.ledger.lookup(batch(1)) is None

    run(scenario)


def test_sample_batches_flatten_within_one_budget_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """decode_batch shares one FlattenBudget among the samples of a batch (made small here to see it bite)."""
    monkeypatch.setattr("fructosa.master.flow.FlattenBudget", lambda: FlattenBudget(50))
    sample = {"host": "node01", "sensor": "Wide", "time": 1000.0, "value": {f"v{i}": i for i in range(10)}}
    pickled = protocol.encode_samples([sample] * 10)[protocol.HEADER_SIZE + 1 + protocol.BATCH_ID_SIZE :]
    count, datapoints, errors = decode_batch(pickled)
    assert (count, len(datapoints), len(errors)) == (10, 40, 6)  # 11 visits a sample: 4 fit in 50
    assert "more than 50 values in one batch" in str(errors[0])
    monkeypatch.undo()
    assert len(decode_batch(pickled)[1]) == 100  # the real budget (200,000) holds them all


def test_the_ledger_is_bounded_and_takes_any_key() -> None:
    ledger = BatchLedger(capacity=2)
    acks: list[str] = []
    first = ledger.admit(("node01", batch(1)), lambda: acks.append("first"))
    assert first is not None and ledger.lookup(("node01", batch(1))) == "pending"
    assert ledger.admit(("node02", batch(1)), lambda: acks.append("other host")) is not None  # per-host keys
    assert ledger.admit(("node01", batch(1)), lambda: acks.append("again")) is None
    first()
    assert acks == ["first", "again"] and ledger.lookup(("node01", batch(1))) == "safe"
    ledger.admit(("node03", batch(1)), lambda: None)
    assert len(ledger) == 2 and ledger.lookup(("node01", batch(1))) is None  # the oldest is forgotten


# -- connection budgets -------------------------------------------------------------


def test_opening_connections_over_budget_drop_the_oldest_of_the_busiest_address() -> None:
    async def scenario() -> None:
        tasks = [asyncio.create_task(asyncio.sleep(10)) for _ in range(8)]
        slots = ConnectionSlots()
        assert slots.arrive(tasks[0], "10.0.0.1", "10.0.0.1:1", 3) == []  # the agent, first
        for index in (1, 2):
            assert slots.arrive(tasks[index], "10.0.0.66", f"10.0.0.66:{index}", 3) == []
        dropped = slots.arrive(tasks[3], "10.0.0.66", "10.0.0.66:3", 3)
        assert [d.address for d in dropped] == ["10.0.0.66:1"]  # the squatter's oldest, not the older agent
        assert slots.opening == 3
        assert slots.authenticate(tasks[0], "10.0.0.1", max_authenticated=1)
        assert (slots.opening, slots.authenticated) == (2, 1)
        assert not slots.authenticate(tasks[2], "10.0.0.66", max_authenticated=1)  # authenticated slots taken
        # one connection per address: the oldest overall goes
        spread = ConnectionSlots()
        for index in range(4):
            dropped = spread.arrive(tasks[4 + index], f"10.0.1.{index}", f"10.0.1.{index}:1", 3)
        assert [d.address for d in dropped] == ["10.0.1.0:1"] and spread.opening == 3
        spread.leave(tasks[5], "10.0.1.1")
        spread.leave(tasks[5], "10.0.1.1")  # leaving twice changes nothing
        assert spread.opening == 2
        for task in tasks:
            task.cancel()

    run(scenario)


def test_forgotten_hosts_leave_the_status_and_liveness(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = time.time()
    table = AgentTable()
    for index in range(12):
        table.detach(*connected(table, f"ghost{index:02}", "10.0.0.66:1", now - 100), now - 100)
    connected(table, "alive", "10.0.0.1:1", now - 1000)
    status_file = tmp_path / "status"
    reporter = Reporter(
        master_config(forget_agents_after=50.0), table, Flow([]), ServerCounters(), status_file=str(status_file)
    )
    with caplog.at_level(logging.INFO, logger="fructosa.master"):
        reporter.report(now)
    assert [row["host"] for row in json.loads(status_file.read_text())["agents"]] == ["alive"]
    assert [path for path, _ in reporter.liveness(now)] == ["alive.fructosa.up"]
    assert "forgot 12 agents not heard from for 50 s: ghost00, ghost01," in caplog.text and ", …" in caplog.text


# -- sinks from the configuration, and reload ----------------------------------------


def master_config(**changes: Any) -> MasterConfig:
    fields: dict[str, Any] = {"path": "test", "self_metrics": False, "listen_port": 0}
    fields.update(changes)
    return MasterConfig(**fields)


def test_build_sinks_follows_the_configuration(tmp_path: Path) -> None:
    (single,) = build_sinks(master_config(graphite=GraphiteConfig(host="carbon1", port=2104, prefix="hpc")))
    assert isinstance(single, CarbonPickleSink) and (single.host, single.port, single.prefix) == (
        "carbon1",
        2104,
        "hpc",
    )
    two = (Destination("c1", 2004, "a"), Destination("c2", 2004, "b"))
    (cluster,) = build_sinks(master_config(graphite=GraphiteConfig(destinations=two)))
    assert isinstance(cluster, CarbonClusterSink) and len(cluster.shards) == 2
    relay = master_config(graphite=GraphiteConfig(enabled=False), upstream=UpstreamConfig(host="central", port=7999))
    (upstream,) = build_sinks(relay)
    assert isinstance(upstream, UpstreamSink) and upstream.address == "central:7999" and upstream.tls is None
    assert build_sinks(master_config(graphite=GraphiteConfig(enabled=False))) == []
    both = build_sinks(master_config(upstream=UpstreamConfig(host="central")))
    assert [type(sink) for sink in both] == [CarbonPickleSink, UpstreamSink]


def test_sinks_reconfigure_what_they_can_and_say_what_waits(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fructosa")
    old = master_config(graphite=GraphiteConfig(host="carbon1", port=2004))
    (carbon,) = build_sinks(old)
    carbon.reconfigure(master_config(graphite=GraphiteConfig(host="carbon2", port=2104, prefix="new", resend_window=9)))
    assert (carbon.host, carbon.port, carbon.prefix, carbon.resend_window) == ("carbon2", 2104, "new", 9)
    assert "carbon destination changes from carbon1:2004 to carbon2:2104" in caplog.text

    two = (Destination("c1", 2004, "a"), Destination("c2", 2004, "b"))
    (cluster,) = build_sinks(master_config(graphite=GraphiteConfig(destinations=two)))
    cluster.reconfigure(master_config(graphite=GraphiteConfig(destinations=two)))
    assert "[Graphite] destinations or prefix" not in caplog.text  # nothing changed
    cluster.reconfigure(master_config(graphite=GraphiteConfig(destinations=two[:1] + (Destination("c3", 2004),))))
    assert "reload: a change of [Graphite] destinations or prefix takes effect at the next restart" in caplog.text
    assert cluster.ring.destinations == two

    (upstream,) = build_sinks(master_config(graphite=GraphiteConfig(enabled=False), upstream=UpstreamConfig("a")))
    upstream.reconfigure(master_config(upstream=UpstreamConfig("a")))
    assert "[upstream] address" not in caplog.text
    upstream.reconfigure(master_config(upstream=UpstreamConfig("b")))
    assert "reload: a change of [upstream] address or secret takes effect at the next restart" in caplog.text
    assert upstream.host == "a"


def test_master_reload_reaches_every_part(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fructosa")
    sink = HeldSink()
    master = Master(master_config(), [], sinks=[sink])
    new = master_config(graphite=GraphiteConfig(enabled=False), link=LinkConfig(secret=b"s" * 32), idle_timeout=7.0)
    master.reload(new)
    assert sink.configs == [new] and master.config is new
    assert master.server.secret == b"s" * 32 and master.server.limits.idle_timeout == 7.0
    assert "reload: new shared secret" in caplog.text
    assert "reload: a change of [Graphite] enabled takes effect at the next restart" in caplog.text


# -- the status report ------------------------------------------------------------------


def test_status_report_lists_agents_and_counters(tmp_path: Path) -> None:
    now = time.time()
    table = AgentTable()
    up, _ = connected(table, "node01", "10.0.0.1:40000", now - 30)
    up.last_data, up.samples_per_second, up.backlog = now - 2, 12.5, 3
    table.detach(*connected(table, "node02", "10.0.0.2:1", now - 60), now - 60)  # known, never sent, gone
    flow = Flow([HeldSink("graphite")])
    flow.counters.frames, flow.counters.duplicates, flow.counters.datapoints = 10, 1, 500
    counters = ServerCounters(connections=4, rejected=1)
    reporter = Reporter(master_config(), table, flow, counters, status_file=str(tmp_path / "status"))
    status = reporter.status(now)
    assert [row["host"] for row in status["agents"]] == ["node01", "node02"]
    assert status["sinks"] == {"graphite": {"blocks": 0}}
    lines = status["report"].splitlines()
    assert lines[0].startswith("up since ") and lines[0].endswith(
        "; 4 connections (1 rejected), 10 batches (1 duplicates), 0 samples (0 malformed), "
        "500 datapoints (0 refused); graphite {'blocks': 0}"
    )
    assert lines[1] == "2 agents (1 up):"
    assert lines[2].split() == ["host", "up", "address", "agent", "connected", "last", "data", "samples/s", "backlog"]
    assert lines[3].split() == ["node01", "yes", "10.0.0.1:40000", "lagent", "test", "30", "s", "ago", "2", "s", "ago",
                                "12.50", "3"]  # fmt: skip
    assert lines[4].split() == ["node02", "NO", "10.0.0.2:1", "lagent", "test", "-", "never", "0.00", "0"]
    reporter.report(now)  # writes the status file and sends liveness through the flow
    written = json.loads((tmp_path / "status").read_text())
    assert written["pid"] == os.getpid() and written["report"].splitlines()[1] == "2 agents (1 up):"
    assert sorted(flow.sinks[0].paths()) == ["node01.fructosa.seconds_since_data", "node01.fructosa.up",
                                             "node02.fructosa.up"]  # fmt: skip
    table.heard("node01", link("10.0.0.9:5000", now), None, now)  # a second live connection of node01
    status = reporter.status(now)
    assert status["agents"][0]["connections"] == 2 and status["agents"][0]["address"] == "10.0.0.9:5000"
    assert status["report"].splitlines()[3].split()[:4] == ["node01", "yes", "10.0.0.9:5000", "+1"]


# -- a real Master on loopback -------------------------------------------------------------


async def send_batches(port: int, host: str, batches: list[tuple[bytes, list]], secret: bytes | None = None) -> list:
    """Open a session as ``host``, send ``D`` batches, return the acknowledged ids (in order)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await open_session(reader, writer, host, secret, {"agent": "test_master", "heartbeat": 5})
        for batch_id, datapoints in batches:
            writer.write(protocol.encode_frame(protocol.DATAPOINTS, d_frame_payload(batch_id, datapoints)))
        acked: list[bytes] = []
        while len(acked) < len(batches):
            kind, payload = await read_frame(reader, 10.0)
            assert kind == protocol.ACK
            acked += protocol.decode_acks(payload)
        return acked
    finally:
        writer.close()


def test_a_master_serves_agents_end_to_end_in_process(tmp_path: Path) -> None:
    async def scenario() -> None:
        sockets = listening_sockets("127.0.0.1", 0)
        port = sockets[0].getsockname()[1]
        sink, tap = HeldSink(hold=False), RecordingTap()
        secret = b"k" * 32
        cfg = master_config(link=LinkConfig(secret=secret), self_metrics_interval=0.2)
        master = Master(cfg, sockets, status_file=str(tmp_path / "status"), sinks=[sink], taps=[tap])
        stop = asyncio.Event()
        running = asyncio.create_task(master.run(stop))
        first = [(batch(1), [("node01.cpu.user", (1000.0, 1.0))]), (batch(2), [("node01.cpu.user", (1001.0, 2.0))])]
        assert await send_batches(port, "node01", first, secret) == [batch(1), batch(2)]
        assert await send_batches(port, "node01", first[1:], secret) == [batch(2)]  # a resend after a reconnect
        assert sink.paths().count("node01.cpu.user") == 2
        assert (master.flow.counters.frames, master.flow.counters.duplicates) == (3, 1)
        with pytest.raises(protocol.ProtocolError, match="refused: authentication failed"):
            await send_batches(port, "intruder", first, b"w" * 32)
        deadline = time.monotonic() + 10
        while not any(host is None for _, host in tap.seen) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the reporter's liveness datapoints
        assert (["node01.fructosa.up", "node01.fructosa.seconds_since_data"], None) in tap.seen
        entry = master.agents.get("node01")
        assert entry is not None and entry.agent == "test_master" and entry.heartbeat_interval == 5.0
        assert master.agents.get("intruder") is None and master.server.counters.rejected == 1
        stop.set()
        await running
        assert tap.closed and not entry.connected
        report = json.loads((tmp_path / "status").read_text())["report"]
        assert "3 connections (1 rejected), 3 batches (1 duplicates)" in report

    run(scenario)


def test_a_verified_hello_beyond_max_connections_is_refused_with_a_reason() -> None:
    """Two connections pass the accept check together; the second verified hello finds the one slot taken."""

    async def scenario() -> None:
        sockets = listening_sockets("127.0.0.1", 0)
        port = sockets[0].getsockname()[1]
        master = Master(master_config(max_connections=1), sockets, sinks=[])
        stop = asyncio.Event()
        running = asyncio.create_task(master.run(stop))
        first = await asyncio.open_connection("127.0.0.1", port)
        second = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert "error" not in await open_session(*first, "node01", None, {"agent": "test_master"})
            with pytest.raises(protocol.ProtocolError, match=r"refused: too many connections \(max connections = 1\)"):
                await open_session(*second, "node02", None, {"agent": "test_master"})
            third = await asyncio.open_connection("127.0.0.1", port)  # closed at once: no challenge
            assert await asyncio.wait_for(third[0].read(), 5) == b""
            third[1].close()
            assert (master.server.slots.authenticated, master.server.counters.rejected) == (1, 2)
        finally:
            first[1].close()
            second[1].close()
            stop.set()
            await running

    run(scenario)


# -- TLS to the upstream --------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return pki_or_skip(tmp_path_factory.mktemp("pki"))


def test_an_upstream_with_only_a_client_certificate_relays_over_tls(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tls cert`` alone asks for TLS, verified against the system's CAs (here: the test CA)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))  # the "system" CAs trust the test CA
    only_cert = LinkConfig(tls_cert=str(pki.client.cert), tls_key=str(pki.client.key))

    async def scenario() -> None:
        sockets = listening_sockets("127.0.0.1", 0)
        port = sockets[0].getsockname()[1]
        central_link = LinkConfig(tls_cert=str(pki.server.cert), tls_key=str(pki.server.key))
        tls = auth.server_context_for(central_link)
        assert tls is not None
        received = HeldSink(hold=False)
        central = Master(master_config(link=central_link, accept_relays=True), sockets, tls=tls, sinks=[received])
        stop = asyncio.Event()
        running = asyncio.create_task(central.run(stop))
        site = master_config(
            graphite=GraphiteConfig(enabled=False), upstream=UpstreamConfig("127.0.0.1", port, only_cert)
        )
        (upstream,) = build_sinks(site)
        assert isinstance(upstream, UpstreamSink) and upstream.tls is not None
        relaying = asyncio.create_task(upstream.run())
        safe = asyncio.Event()
        upstream.submit(Block.of([("node05.cpu.user", (1000.0, 4.0))]), safe.set)
        await safe.wait()  # acknowledged by the TLS-only central lmaster: the link is TLS
        assert received.paths() == ["node05.cpu.user"]
        await upstream.close(1.0)
        relaying.cancel()
        await asyncio.gather(relaying, return_exceptions=True)
        stop.set()
        await running

    run(scenario)


def test_unusable_upstream_tls_files_are_a_check_problem(tmp_path: Path) -> None:
    not_a_certificate = tmp_path / "cert.pem"
    not_a_certificate.write_text("not a certificate\n")
    link = LinkConfig(tls_cert=str(not_a_certificate), tls_key=str(not_a_certificate))
    cfg = master_config(graphite=GraphiteConfig(enabled=False), upstream=UpstreamConfig("127.0.0.1", 7888, link))
    problems = [problem for problem in checks.master_problems(cfg) if problem.startswith("[upstream]")]
    assert len(problems) == 1 and problems[0].startswith("[upstream] tls: cannot use the certificate settings: ")


def test_sinks_taps_and_the_wire_import_neither_sensors_nor_configuration() -> None:
    """A relay-only head node and a sink's tests need no psutil: these layers stay below the configuration."""
    modules = ["fructosa.sinks.carbon", "fructosa.sinks.cluster", "fructosa.sinks.build", "fructosa.taps",
               "fructosa.wire.session", "fructosa.ratelog"]  # fmt: skip
    code = f"import sys\nfor name in {modules!r}: __import__(name)\nprint(sorted(m for m in sys.modules if m in "
    code += "('psutil', 'fructosa.config', 'fructosa.sensors', 'fructosa.logs')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
