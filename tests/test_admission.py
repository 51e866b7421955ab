"""Back-pressure, in-process: the admission gate (hysteresis, FIFO turns, one
at a time), lmaster's own datapoints dropped instead of acknowledged ones,
and the sinks' pressure counting bytes as well as datapoints.

The pressure is a plain number the tests set, standing for the sinks' fill;
the real sinks' pressure is checked against their real queues and spools.
The flood itself, with real processes, is tests/test_flood.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from fructosa.master.admission import Admission
from fructosa.master.flow import Flow
from fructosa.sinks import Sink, block_bytes
from fructosa.sinks.carbon import CarbonPickleSink
from fructosa.sinks.upstream import UpstreamSink
from fructosa.spool import Spool
from fructosa.wire.blocks import Block
from tests.support.carbon import CarbonCache

TIMEOUT = 10.0
POLL = 0.01
LONG_PATH = "node01." + ".".join(["a" * 199] * 10)  # 2,000-odd characters, the longest a path may be

pytestmark = pytest.mark.timeout(30)


def run(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))


class Level:
    """A pressure the test sets."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


async def settle() -> None:
    """Let the gate look at the pressure a few times."""
    await asyncio.sleep(5 * POLL)


async def take_turns(gate: Admission, name: str, turns: int, log: list[str], hold: asyncio.Event | None = None) -> None:
    for _ in range(turns):
        async with gate.turn():
            log.append(name)
            if hold is not None:
                await hold.wait()
            await asyncio.sleep(0)


def test_an_open_gate_takes_batches_at_once() -> None:
    async def scenario() -> None:
        gate = Admission(Level(0.5), poll_interval=POLL)
        taken: list[str] = []
        await take_turns(gate, "a", 100, taken)
        assert taken == ["a"] * 100
        assert gate.counters.waits == 0 and not gate.congested

    run(scenario)


def test_the_gate_closes_at_the_high_water_mark_and_opens_at_the_low_one() -> None:
    async def scenario() -> None:
        level = Level(0.95)
        gate = Admission(level, high=0.9, low=0.75, poll_interval=POLL)
        taken: list[str] = []
        waiter = asyncio.create_task(take_turns(gate, "a", 1, taken))
        await settle()
        assert taken == [] and gate.congested and gate.waiting == 1
        level.value = 0.8  # below high, above low: still closed (hysteresis)
        await settle()
        assert taken == [] and gate.congested
        level.value = 0.7
        await asyncio.wait_for(waiter, 1.0)
        assert taken == ["a"] and not gate.congested
        assert gate.counters.congestions == 1 and gate.counters.waits == 1

    run(scenario)


def test_turns_go_in_fifo_order_one_batch_per_turn_so_a_flood_gets_its_share() -> None:
    async def scenario() -> None:
        level = Level(1.0)
        gate = Admission(level, poll_interval=POLL)
        taken: list[str] = []
        flooder = asyncio.create_task(take_turns(gate, "flood", 6, taken))
        await asyncio.sleep(0)
        honest = [asyncio.create_task(take_turns(gate, name, 2, taken)) for name in ("a", "b")]
        await settle()
        assert taken == []
        level.value = 0.0
        await asyncio.wait_for(asyncio.gather(flooder, *honest), 2.0)
        # round robin while anyone waits: the flood's second batch comes after a's and b's first
        assert taken[:6] == ["flood", "a", "b", "flood", "a", "b"], taken
        assert taken[6:] == ["flood"] * 4

    run(scenario)


def test_one_turn_at_a_time_while_connections_wait() -> None:
    async def scenario() -> None:
        level = Level(1.0)
        gate = Admission(level, poll_interval=POLL)
        taken: list[str] = []
        hold = asyncio.Event()
        first = asyncio.create_task(take_turns(gate, "slow", 1, taken, hold))
        await asyncio.sleep(0)
        second = asyncio.create_task(take_turns(gate, "next", 1, taken))
        await settle()
        level.value = 0.0
        await settle()
        assert taken == ["slow"]  # the next waits until the slow one's batch is taken
        hold.set()
        await asyncio.wait_for(asyncio.gather(first, second), 1.0)
        assert taken == ["slow", "next"]

    run(scenario)


def test_a_connection_that_ends_while_waiting_does_not_stall_the_others() -> None:
    async def scenario() -> None:
        level = Level(1.0)
        gate = Admission(level, poll_interval=POLL)
        taken: list[str] = []
        gone = asyncio.create_task(take_turns(gate, "gone", 1, taken))
        await asyncio.sleep(0)
        stays = asyncio.create_task(take_turns(gate, "stays", 1, taken))
        await settle()
        gone.cancel()
        level.value = 0.0
        await asyncio.wait_for(stays, 1.0)
        assert taken == ["stays"]
        granted_then_gone = asyncio.create_task(take_turns(gate, "x", 1, taken, asyncio.Event()))
        await settle()
        granted_then_gone.cancel()  # ends in the middle of its turn: the turn is over
        await asyncio.gather(granted_then_gone, return_exceptions=True)
        await take_turns(gate, "after", 1, taken)
        assert taken[-1] == "after"

    run(scenario)


def test_the_marks_must_make_sense() -> None:
    with pytest.raises(ValueError, match="low-water mark"):
        Admission(Level(), high=0.5, low=0.6)


class KeepingSink(Sink):
    """Keeps what it gets; its pressure is what the test says."""

    name = "keeping"

    def __init__(self, level: Level) -> None:
        self.level = level
        self.blocks: list[Block] = []

    def submit(self, block: Block, on_safe: Callable[[], None] | None = None) -> None:
        self.blocks.append(block)
        if on_safe:
            on_safe()

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def close(self, timeout: float) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {"blocks": len(self.blocks)}

    def pressure(self) -> float:
        return self.level()


def test_lmasters_own_datapoints_are_dropped_not_acknowledged_ones() -> None:
    level = Level(0.0)
    sink = KeepingSink(level)
    flow = Flow([sink])
    try:
        flow.emit([("lmaster.up", (1.0, 1.0))])
        assert len(sink.blocks) == 1
        level.value = 0.95
        flow.emit([("lmaster.up", (2.0, 1.0)), ("lmaster.agents", (2.0, 3.0))])
        assert len(sink.blocks) == 1 and flow.counters.own_dropped == 2
        assert flow.pressure() == 0.95
    finally:
        flow.close()


def long_block(count: int) -> Block:
    return Block.of([(f"{LONG_PATH}.{index}", (1.0e9 + index, float(index))) for index in range(count)])


def test_carbon_memory_is_bounded_in_bytes_without_a_spool() -> None:
    async def scenario() -> None:
        sink = CarbonPickleSink("127.0.0.1", 9, max_queued=1_000_000, max_queued_bytes=1 << 20)
        block = long_block(100)  # about 200 KB: five of them fill the byte bound long before 1,000,000 datapoints
        assert block_bytes(block) > 200_000
        for _ in range(4):
            sink.submit(block)
        assert 0.75 < sink.pressure() < 1.0
        for _ in range(4):
            sink.submit(block)
        stats = sink.stats()
        assert stats["queued_bytes"] <= 1 << 20 and stats["dropped"] > 0
        assert sink.pressure() <= 1.0

    run(scenario)


def test_carbon_pressure_counts_what_may_land_in_the_spool(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool(tmp_path / "spool", 4 << 20)
        sink = CarbonPickleSink("127.0.0.1", 9, spool=spool, max_queued_bytes=4 << 20)
        acknowledged: list[int] = []
        block = long_block(100)
        for index in range(15):  # carbon is away: to the spool, each one safe at once
            sink.submit(block, lambda index=index: acknowledged.append(index))
        assert acknowledged == list(range(15))
        assert sink.pressure() == pytest.approx(spool.bytes / spool.max_bytes)
        assert 0.6 < sink.pressure() < 0.9
        spool.close()

    run(scenario)


def test_upstream_queue_pressure_counts_bytes() -> None:
    sink = UpstreamSink("127.0.0.1", 9, "relay")
    sink.max_queued, sink.max_queued_bytes = 1_000_000, 1 << 20
    sink.submit(long_block(250))
    assert sink.pressure() == pytest.approx(block_bytes(long_block(250)) / (1 << 20))
    assert sink.pressure() > 0.4 and sink.stats()["queued_bytes"] > 500_000


DISK_FULL_SCRIPT = """
import asyncio, json, resource, signal, sys, time
from fructosa.sinks.carbon import CarbonPickleSink
from fructosa.spool import Spool
from fructosa.wire.blocks import Block

async def main(directory, port):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
    spool = Spool(directory, 64 << 20, segment_bytes=64 << 20)
    sink = CarbonPickleSink("127.0.0.1", port, spool=spool)
    acknowledged = []
    now = time.time()
    block = Block.of([(f"node01.disk.full.{i}", (now - 600 + i, float(i))) for i in range(500)])
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
    for index in range(20):  # carbon not connected yet: to the spool, until the disk refuses
        sink.submit(block, lambda index=index: acknowledged.append(index))
    refused = {"acknowledged": len(acknowledged), "stats": sink.stats(), "pressure": sink.pressure()}
    task = asyncio.create_task(sink.run())
    for _ in range(200):
        if len(acknowledged) == 20 and not sink.stats()["queued"] and not len(spool):
            break
        await asyncio.sleep(0.05)
    delivered = {"acknowledged": len(acknowledged), "stats": sink.stats()}
    await sink.close(5)
    task.cancel()
    print(json.dumps({"refused": refused, "delivered": delivered}))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_a_block_the_disk_refuses_stays_in_memory_unacknowledged_until_carbon_has_it(
    tmp_path: Path, carbon: CarbonCache
) -> None:
    """A full disk (here a file size limit) must not lose a batch: it waits in memory, unacknowledged."""
    result = subprocess.run(
        [sys.executable, "-c", DISK_FULL_SCRIPT, str(tmp_path / "spool"), str(carbon.pickle_port)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    outcome = json.loads(result.stdout.splitlines()[-1])
    refused, delivered = outcome["refused"], outcome["delivered"]
    assert 0 < refused["acknowledged"] < 20  # what fit in the spool is acknowledged, the rest is not
    assert refused["stats"]["spool_refused"] == (20 - refused["acknowledged"]) * 500
    assert refused["stats"]["queued"] == (20 - refused["acknowledged"]) * 500
    assert delivered["acknowledged"] == 20 and delivered["stats"]["spool_dropped"] == 0
    carbon.wait_for("node01.disk.full.499", timeout=20)
    assert "spool refused" in result.stderr


def test_a_batch_taken_without_queueing_still_holds_the_next_while_it_is_being_taken() -> None:
    """A large ``S`` frame is decoded in a thread: others must not pass the check meanwhile and all deliver after."""

    async def scenario() -> None:
        gate = Admission(Level(0.0), poll_interval=POLL)
        taken: list[str] = []
        hold = asyncio.Event()
        decoding = asyncio.create_task(take_turns(gate, "decoding", 1, taken, hold))
        await asyncio.sleep(0)
        others = [asyncio.create_task(take_turns(gate, name, 1, taken)) for name in ("a", "b")]
        await settle()
        assert taken == ["decoding"] and gate.waiting == 2
        hold.set()
        await asyncio.wait_for(asyncio.gather(decoding, *others), 1.0)
        assert taken == ["decoding", "a", "b"]
        await take_turns(gate, "alone", 3, taken)  # the queue is empty again: no waiting
        assert gate.counters.waits == 2

    run(scenario)
