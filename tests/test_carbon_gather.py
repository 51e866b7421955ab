"""The carbon sink gathers blocks that come one at a time into one write (fructosa/sinks/carbon.py,
fructosa/sinks/carbon_link.py), and still writes at once once enough waits, and at close.

carbon here is a plain asyncio server that reads and counts the datapoints of the frames it gets;
the writes are seen by wrapping the sink's ``next_write`` (what the link asks for each write).
"""

from __future__ import annotations

import asyncio
import pickle
import struct

import pytest

from fructosa.sinks import carbon
from fructosa.sinks.carbon import CarbonPickleSink
from fructosa.wire.blocks import Block

DEADLINE = 30.0


class FakeCarbon:
    """Counts the datapoints in the pickle frames written to it."""

    def __init__(self) -> None:
        self.datapoints = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!L", await reader.readexactly(4))
                self.datapoints += len(pickle.loads(await reader.readexactly(length)))
        except asyncio.IncompleteReadError:
            writer.close()

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


async def poll(condition, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def block(tag: int, count: int = 10) -> Block:
    return Block.of([(f"node{tag}.S.v{i}", (1_700_000_000.0, float(i))) for i in range(count)], samples=1)


def recording(sink: CarbonPickleSink) -> list[int]:
    """The number of batches in each write the sink hands its link."""
    writes: list[int] = []
    next_write = sink.next_write

    def recorded() -> tuple[list[bytes], object] | None:
        write = next_write()
        if write is not None and isinstance(write[1], tuple):
            writes.append(len(write[1][0]))
        return write

    sink.next_write = recorded  # type: ignore[method-assign]
    return writes


async def connected_sink(fake: FakeCarbon) -> tuple[CarbonPickleSink, asyncio.Task]:
    sink = CarbonPickleSink("127.0.0.1", await fake.start())
    task = asyncio.create_task(sink.run())
    await poll(lambda: sink.connected, "the sink to connect")
    await asyncio.sleep(0.05)  # the link has found nothing to write and waits
    return sink, task


@pytest.mark.timeout(60)
def test_blocks_arriving_one_by_one_go_out_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(carbon, "GATHER_SECONDS", 0.5)  # far longer than the loop takes to submit them all

    async def scenario() -> list[int]:
        fake = FakeCarbon()
        sink, task = await connected_sink(fake)
        writes = recording(sink)
        safe: list[int] = []
        for tag in range(5):
            sink.submit(block(tag), lambda tag=tag: safe.append(tag))
            await asyncio.sleep(0)  # each block in its own loop iteration, as from five agents
        await poll(lambda: fake.datapoints == 50, "the 50 datapoints at carbon")
        assert safe == [0, 1, 2, 3, 4] and sink.stats()["sent"] == 50
        await sink.close(timeout=5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        fake.close()
        return writes

    assert asyncio.run(scenario()) == [5]


@pytest.mark.timeout(60)
def test_enough_waiting_is_written_at_once_and_close_does_not_wait_for_the_gathering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(carbon, "GATHER_SECONDS", 3600.0)  # only a full gathering or close can write these

    async def scenario() -> list[int]:
        fake = FakeCarbon()
        sink, task = await connected_sink(fake)
        writes = recording(sink)
        sink.submit(block(0, carbon.GATHER_DATAPOINTS))  # enough on its own: written at once
        await poll(lambda: fake.datapoints == carbon.GATHER_DATAPOINTS, "the large block at carbon")
        sink.submit(block(1))
        await asyncio.sleep(0.05)
        assert fake.datapoints == carbon.GATHER_DATAPOINTS  # the small one waits for company
        await sink.close(timeout=5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await poll(lambda: fake.datapoints == carbon.GATHER_DATAPOINTS + 10, "the small block at carbon")
        fake.close()
        return writes

    assert asyncio.run(scenario()) == [1, 1]
