"""lmaster's per-connection read deadlines, its shared acknowledgement flush and
the admission's turn without a queue, in one process (no daemons)."""

from __future__ import annotations

import asyncio
import math

import pytest

from fructosa.master.admission import Admission
from fructosa.master.deadlines import DeadlineWatch
from fructosa.master.server import Limits, read_agent_frame
from fructosa.wire import protocol
from fructosa.wire.session import AckFlusher, AckWriter, IdleTimeout

LIMITS = Limits(peer_timeout=0.3, idle_timeout=2.0)


def run(coroutine_function, timeout: float = 10.0):
    async def bounded():
        return await asyncio.wait_for(coroutine_function(), timeout)

    return asyncio.run(bounded())


def test_a_silent_peer_gets_idle_timeout() -> None:
    async def scenario() -> tuple[type, float]:
        watch = DeadlineWatch(lambda: min(LIMITS.peer_timeout, LIMITS.idle_timeout))
        reader = asyncio.StreamReader()
        deadline = watch.watch(reader)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(IdleTimeout) as raised:
            await read_agent_frame(reader, deadline, LIMITS)
        watch.stop()
        return raised.type, loop.time() - began

    kind, waited = run(scenario)
    assert kind is IdleTimeout
    assert LIMITS.idle_timeout <= waited < LIMITS.idle_timeout + 5


def test_a_started_frame_must_complete_within_the_peer_timeout() -> None:
    async def scenario() -> float:
        watch = DeadlineWatch(lambda: min(LIMITS.peer_timeout, LIMITS.idle_timeout))
        reader = asyncio.StreamReader()
        deadline = watch.watch(reader)
        loop = asyncio.get_running_loop()
        reader.feed_data(protocol.encode_frame(protocol.HEARTBEAT, b"{}")[:3])  # part of the header only
        began = loop.time()
        with pytest.raises(asyncio.TimeoutError):
            await read_agent_frame(reader, deadline, LIMITS)
        watch.stop()
        return loop.time() - began

    waited = run(scenario)
    assert LIMITS.peer_timeout <= waited < LIMITS.idle_timeout  # the peer timeout, not the idle one


def test_frames_in_time_are_read_and_the_deadline_is_off_between_reads() -> None:
    async def scenario() -> tuple[list, float, int]:
        watch = DeadlineWatch(lambda: min(LIMITS.peer_timeout, LIMITS.idle_timeout))
        reader = asyncio.StreamReader()
        deadline = watch.watch(reader)
        frames = []
        for index in range(3):  # each frame after a silence, in two parts
            frame = protocol.encode_frame(protocol.HEARTBEAT, b'{"queued": %d}' % index)
            loop = asyncio.get_running_loop()
            loop.call_later(0.5, reader.feed_data, frame[:2])  # silent longer than the peer timeout: fine
            loop.call_later(0.55, reader.feed_data, frame[2:])
            frames.append(await read_agent_frame(reader, deadline, LIMITS))
        at = deadline.at
        await asyncio.sleep(LIMITS.idle_timeout + 0.2)  # busy with the frame: no deadline runs
        expired = watch.check(asyncio.get_running_loop().time())
        watch.forget(deadline)
        watch.stop()
        return frames, at, expired

    frames, at, expired = run(scenario)
    assert frames == [(protocol.HEARTBEAT, b'{"queued": %d}' % index) for index in range(3)]
    assert at == math.inf and expired == 0


def test_an_oversized_length_is_refused_before_the_payload() -> None:
    async def scenario() -> str:
        watch = DeadlineWatch(lambda: 1.0)
        reader = asyncio.StreamReader()
        deadline = watch.watch(reader)
        reader.feed_data((protocol.MAX_FRAME + 1).to_bytes(4, "big") + b"D")
        with pytest.raises(protocol.ProtocolError) as raised:
            await read_agent_frame(reader, deadline, LIMITS)
        watch.stop()
        return str(raised.value)

    assert "outside" in run(scenario)


class FakeWriter:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, chunks: list[bytes]) -> None:
        self.written.extend(chunks)

    def is_closing(self) -> bool:
        return False


def test_acknowledgements_of_many_connections_go_out_in_one_flush() -> None:
    async def scenario() -> tuple[list[list[bytes]], int]:
        flusher = AckFlusher()
        writers = [FakeWriter() for _ in range(3)]
        acks = [AckWriter(writer, flusher) for writer in writers]  # type: ignore[arg-type]
        closed = AckWriter(FakeWriter(), flusher)  # type: ignore[arg-type]
        flushes = []
        original = flusher.flush
        flusher.flush = lambda: (flushes.append(1), original())  # type: ignore[method-assign]
        for index, writer in enumerate(acks):
            for sequence in range(index + 1):
                writer.send(protocol.batch_id(bytes(16), sequence))
        closed.send(protocol.batch_id(bytes(16), 9))
        closed.closed = True
        await asyncio.sleep(0.05)
        return [writer.written for writer in writers] + [closed.writer.written], len(flushes)  # type: ignore[attr-defined]

    written, flushes = run(scenario)
    assert flushes == 1
    for index, frames in enumerate(written[:3]):
        assert len(frames) == 1
        kind, payload = protocol.split_frame(frames[0][protocol.HEADER_SIZE :])
        assert kind == protocol.ACK
        assert protocol.decode_acks(payload) == [protocol.batch_id(bytes(16), seq) for seq in range(index + 1)]
    assert written[3] == []  # the connection ended: nothing written to it


def test_a_turn_without_queue_blocks_the_queue_until_it_ends() -> None:
    async def scenario() -> list[str]:
        pressure = [0.0]
        admission = Admission(lambda: pressure[0])
        order: list[str] = []
        assert admission.take_turn_now()
        assert not admission.take_turn_now()  # one turn at a time

        async def queued() -> None:
            async with admission.turn():
                order.append("queued")

        task = asyncio.create_task(queued())
        await asyncio.sleep(0.05)
        order.append("first ends")
        admission.end_turn()
        await asyncio.wait_for(task, 5)
        assert admission.take_turn_now()  # the queue is empty again
        admission.end_turn()
        pressure[0] = 1.0
        assert not admission.take_turn_now()  # congested: every batch waits for its turn
        admission.close()
        return order

    assert run(scenario) == ["first ends", "queued"]
