"""A tick's frame built in one go (BlockFramer), written straight to the socket (write_frame), and the stream's
heartbeat timer that waits on while ticks send: each gives what the general path gives."""

from __future__ import annotations

import asyncio
import os
import socket
from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from fructosa.wire import protocol
from fructosa.wire.blocks import Block, BlockFramer
from fructosa.wire.direct_write import write_frame
from fructosa.wire.session import HeartbeatTimer


def batch_ids() -> list[bytes]:
    return [protocol.batch_id(bytes(16), n) for n in range(100)]


@given(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 4)), min_size=1, max_size=8))
@settings(max_examples=60, deadline=None)
def test_a_framed_block_is_the_frame_of_its_batch_id_and_encoding(shapes: list[tuple[int, int]]) -> None:
    framer, ids = BlockFramer(), iter(batch_ids())
    taken_ids: list[bytes] = []

    def new_id() -> bytes:
        taken_ids.append(next(ids))
        return taken_ids[-1]

    paths = {count: "\n".join(f"h.s.p{n}" for n in range(count)).encode() for count, _ in shapes}
    for count, samples in shapes:  # shapes come back, change, and repeat: the kept heads must follow
        block = Block(paths[count], array("d", [1.5 * n for n in range(count)]), array("d", range(count)), samples)
        taken = len(taken_ids)
        frame = framer.frame(block, new_id)
        assert len(taken_ids) == taken + 1
        assert frame == protocol.encode_frame(protocol.DATAPOINTS, taken_ids[-1] + block.encode())


def test_a_block_without_datapoints_or_over_the_cap_is_not_framed_and_takes_no_id() -> None:
    framer = BlockFramer()

    def no_id() -> bytes:
        raise AssertionError("a batch id was taken")

    assert framer.frame(Block(), no_id) is None
    huge = protocol.MAX_FRAME // 16
    block = Block(b"\n".join([b"h.p"] * huge), array("d", bytes(8 * huge)), array("d", bytes(8 * huge)), 1)
    assert framer.frame(block, no_id) is None


class RecordingTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))


def test_write_frame_goes_straight_to_the_socket_and_hands_the_rest_to_the_transport() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        transport = RecordingTransport()
        assert write_frame(transport, ours.fileno(), b"abc")  # type: ignore[arg-type]
        assert theirs.recv(10) == b"abc" and transport.written == []
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = os.urandom(1 << 20)
        assert not write_frame(transport, ours.fileno(), big)  # type: ignore[arg-type]
        assert len(transport.written) == 1 and 0 < len(transport.written[0]) < len(big)
        sent = len(big) - len(transport.written[0])
        assert big[sent:] == transport.written[0]
        assert not write_frame(transport, ours.fileno(), b"full")  # type: ignore[arg-type]
        assert transport.written[-1] == b"full"  # nothing taken (the socket is full): all to the transport
        assert not write_frame(transport, -1, b"tls")  # type: ignore[arg-type]
        assert transport.written[-1] == b"tls"


def test_write_frame_after_an_error_hands_the_whole_frame_to_the_transport() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        ours.setblocking(False)
        theirs.close()
        transport = RecordingTransport()
        assert not write_frame(transport, ours.fileno(), b"lost")  # type: ignore[arg-type]
        assert transport.written == [b"lost"]


def test_the_heartbeat_timer_waits_on_while_the_heartbeat_moved_and_wakes_once_it_is_due() -> None:
    async def scenario() -> tuple[list[float], float, list[float]]:
        loop = asyncio.get_running_loop()
        due_at = loop.time() + 0.5  # frames went after the timer was set: the heartbeat moved on
        woken: list[float] = []
        timer = HeartbeatTimer(loop, 0.05, lambda: due_at, lambda: woken.append(loop.time()))
        deadline = loop.time() + 10.0
        while not woken:
            assert loop.time() < deadline, "no wake once the heartbeat was due"
            await asyncio.sleep(0.02)
        timer.cancel()
        at_once: list[float] = []
        HeartbeatTimer(loop, 0.0, lambda: 0.0, lambda: at_once.append(loop.time()))  # a heartbeat asked for
        await asyncio.sleep(0.3)
        return woken, due_at, at_once

    woken, due_at, at_once = asyncio.run(scenario())
    assert len(woken) == 1 and woken[0] >= due_at and len(at_once) == 1
