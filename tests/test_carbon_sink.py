"""The carbon pickle sink: frame limits, bounded queue, reconnects to a real carbon."""

from __future__ import annotations

import asyncio
import pickle
import struct
import time
from pathlib import Path

from fructosa.sinks.carbon import CarbonPickleSink
from fructosa.sinks.carbon_pickle import CARBON_DATAPOINTS_PER_FRAME, CARBON_MAX_FRAME, carbon_frames
from fructosa.wire.blocks import Block
from tests.support.carbon import CarbonCache
from tests.support.waiting import wait_for


def unframe(frame: bytes) -> list:
    (length,) = struct.unpack("!L", frame[:4])
    assert length == len(frame) - 4
    return pickle.loads(frame[4:])


def test_frames_respect_carbons_limits() -> None:
    points = [(f"n.s.m{i}", (1, float(i))) for i in range(1234)]
    frames = carbon_frames(Block.of(points))
    assert [len(unframe(f)) for f in frames] == [500, 500, 234]
    assert [p for f in frames for p in unframe(f)] == points
    long_paths = [("x" * 2200 + f".{i}", (1, 1.0)) for i in range(499)]  # > 1 MiB in one chunk
    frames = carbon_frames(Block.of(long_paths))
    assert len(frames) > 1 and all(len(f) - 4 < CARBON_MAX_FRAME for f in frames)
    assert sum(len(unframe(f)) for f in frames) == 499
    assert all(len(unframe(f)) <= CARBON_DATAPOINTS_PER_FRAME for f in frames)


async def drive(sink: CarbonPickleSink, until, timeout: float = 20.0) -> None:
    """Run the sink until ``until()`` holds (polled), then close it."""
    task = asyncio.create_task(sink.run())
    try:  # polled from a thread: the sink runs on this event loop meanwhile
        await asyncio.to_thread(wait_for, until, timeout, "the sink's condition", interval=0.05)
    finally:
        await sink.close(timeout=5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_many_datapoints_reach_whisper_with_prefix(carbon: CarbonCache) -> None:
    now = int(time.time())
    points = [(f"node{i % 50:02d}.Load.v{i // 50}", (now, float(i))) for i in range(3000)]
    sink = CarbonPickleSink("127.0.0.1", carbon.pickle_port, prefix="hpc")
    for start in range(0, 3000, 100):
        sink.submit(Block.of(points[start : start + 100]))
    asyncio.run(drive(sink, lambda: sink.stats()["sent"] == 3000))
    assert sink.stats()["sent"] == 3000 and sink.stats()["dropped"] == 0
    carbon.wait_for("hpc.node49.Load.v59", timeout=20)
    wait_for(lambda: len(carbon.metric_paths()) >= 3000, 20, "3000 whisper files")
    assert len(carbon.metric_paths()) == 3000
    assert carbon.series("hpc.node07.Load.v3")[-1] == (now, 157.0)


def test_bounded_queue_drops_oldest_when_carbon_is_away(tmp_path: Path) -> None:
    carbon = CarbonCache(tmp_path / "carbon").reserve_ports()
    sink = CarbonPickleSink("127.0.0.1", carbon.pickle_port, max_queued=100)
    now = int(time.time())
    for batch in range(5):
        sink.submit(Block.of([(f"n.S.b{batch}.p{i}", (now, 1.0)) for i in range(50)]))
    stats = sink.stats()
    assert (stats["queued"], stats["sent"], stats["dropped"], stats["connects"]) == (100, 0, 150, 0)

    async def scenario() -> None:
        task = asyncio.create_task(sink.run())
        await asyncio.sleep(1)  # the condition under test: carbon is down a while, the sink retries with backoff
        with carbon:
            await asyncio.to_thread(wait_for, lambda: sink.stats()["sent"] >= 100, 20, "100 datapoints sent")
            await asyncio.to_thread(carbon.wait_for, "n.S.b4.p49")
            assert not carbon.whisper_file("n.S.b0.p0").exists()
        await sink.close(timeout=1)
        task.cancel()

    asyncio.run(scenario())
    assert sink.stats()["connects"] == 1


def test_sink_reconnects_after_carbon_restarts(tmp_path: Path) -> None:
    carbon = CarbonCache(tmp_path / "carbon")
    sink = CarbonPickleSink("127.0.0.1", carbon.reserve_ports().pickle_port)

    async def scenario() -> None:
        task = asyncio.create_task(sink.run())
        with carbon:
            sink.submit(Block.of([("n.S.before", (int(time.time()), 1.0))]))
            await asyncio.to_thread(carbon.wait_for, "n.S.before")
        await asyncio.to_thread(wait_for, lambda: not sink.connected, 20, "the sink noticing carbon is gone")
        # What the sink gets now must arrive after carbon returns.
        sink.submit(Block.of([("n.S.during", (int(time.time()), 2.0))]))
        with carbon:
            points = await asyncio.to_thread(carbon.wait_for, "n.S.during", timeout=30)
            assert points[-1][1] == 2.0
        await sink.close(timeout=1)
        task.cancel()

    asyncio.run(scenario())
    assert sink.stats()["connects"] == 2
