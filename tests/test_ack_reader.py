"""The sending session's acknowledgement reader (fructosa.wire.ack_reader): frames parsed where
the bytes arrive, whatever the pieces they arrive in, from the transport or read directly from
the socket; anything but an acknowledgement, or the end of the connection, ends it once."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fructosa.wire import protocol
from fructosa.wire.ack_reader import BUFFER_SIZE, AckReader


class OpeningProtocol:
    """Stands for the protocol of the opening (a StreamReaderProtocol): records what reaches it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_writing(self) -> None:
        self.calls.append("pause")

    def resume_writing(self) -> None:
        self.calls.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(f"lost {exc}")


class FakeTransport:
    """What the reader asks of a transport; ``sock`` stands for a plain TCP socket (None: TLS)."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock
        self.opening = OpeningProtocol()
        self.protocol: object = self.opening
        self.closed = False

    def get_extra_info(self, name: str) -> object:
        return {"socket": self.sock, "sslcontext": None}.get(name)

    def get_protocol(self) -> object:
        return self.protocol

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def close(self) -> None:
        self.closed = True


class FakeWriter:
    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport


class Recorded:
    """A reader on a fake transport, with what it handed on."""

    def __init__(self, sock: socket.socket | None = None, fail_on: bytes | None = None) -> None:
        self.transport = FakeTransport(sock)
        self.acknowledged: list[bytes] = []
        self.ends = 0
        self.fail_on = fail_on
        self.reader = AckReader(FakeWriter(self.transport), self.on_acks, self.on_closed, "test peer")  # type: ignore[arg-type]

    def on_acks(self, batch_ids: list[bytes]) -> None:
        for batch_id in batch_ids:  # in order, as the session takes them, failing at ``fail_on``
            if batch_id == self.fail_on:
                raise RuntimeError("the owner failed")
            self.acknowledged.append(batch_id)

    def on_closed(self, reader: AckReader) -> None:
        assert reader is self.reader
        self.ends += 1

    def deliver(self, data: bytes) -> None:
        """As a transport does: into the buffer the reader gives, then buffer_updated."""
        while data:
            room = self.reader.get_buffer(-1)
            assert len(room) > 0
            count = min(len(room), len(data))
            room[:count] = data[:count]
            self.reader.buffer_updated(count)
            data = data[count:]


def ids(count: int, first: int = 0) -> list[bytes]:
    return [protocol.batch_id(bytes(16), first + n) for n in range(count)]


def ack_frames(groups: list[list[bytes]]) -> bytes:
    return b"".join(protocol.encode_acks(group) for group in groups)


@given(
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=6),
    st.lists(st.integers(min_value=1, max_value=200), max_size=12),
)
@settings(max_examples=100, deadline=None)
def test_acknowledgements_in_any_pieces_are_handed_on_in_order(sizes: list[int], cuts: list[int]) -> None:
    groups, first = [], 0
    for size in sizes:
        groups.append(ids(size, first))
        first += size
    data = ack_frames(groups)
    recorded = Recorded()
    position = 0
    for cut in [*cuts, len(data)]:
        recorded.deliver(data[position : position + cut])
        position = min(len(data), position + cut)
    recorded.deliver(data[position:])
    assert recorded.acknowledged == [batch_id for group in groups for batch_id in group]
    assert recorded.ends == 0 and not recorded.reader.closed


def test_a_frame_larger_than_the_buffer_is_read_whole_and_the_buffer_shrinks_after() -> None:
    many = ids(BUFFER_SIZE // protocol.BATCH_ID_SIZE * 3)
    recorded = Recorded()
    recorded.deliver(ack_frames([many, ids(1, len(many))]))
    assert recorded.acknowledged == [*many, *ids(1, len(many))]
    assert len(recorded.reader.get_buffer(-1)) == BUFFER_SIZE


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (protocol.encode_frame(protocol.HEARTBEAT, b"{}"), "unexpected frame b'B'"),
        (protocol.encode_frame(b"Z", b"x"), "unknown frame kind"),
        (b"\x00\x00\x00\x00", "frame length 0"),
        ((protocol.MAX_FRAME + 1).to_bytes(4, "big") + b"A", "frame length"),
        (protocol.encode_frame(protocol.ACK, b"short"), "not a list of batch ids"),
    ],
)
def test_anything_but_an_acknowledgement_ends_the_connection_once(frame: bytes, message: str) -> None:
    recorded = Recorded()
    recorded.deliver(ack_frames([ids(2)]) + frame + ack_frames([ids(1, 2)]))
    assert recorded.acknowledged == ids(2)  # what came before, not after
    assert recorded.reader.closed and recorded.ends == 1 and recorded.transport.closed
    assert isinstance(recorded.reader.error, protocol.ProtocolError) and message in str(recorded.reader.error)
    recorded.reader.connection_lost(None)
    assert recorded.ends == 1


def test_an_owner_failing_on_an_acknowledgement_ends_the_connection_with_its_error() -> None:
    recorded = Recorded(fail_on=ids(1, 1)[0])
    recorded.deliver(ack_frames([ids(1), ids(1, 1), ids(1, 2)]))
    assert recorded.acknowledged == ids(1)
    assert recorded.reader.closed and isinstance(recorded.reader.error, RuntimeError)


def test_the_end_of_the_connection_is_told_once_with_why() -> None:
    recorded = Recorded()
    assert recorded.reader.eof_received() is False  # the transport closes
    recorded.reader.connection_lost(None)
    assert recorded.ends == 1 and recorded.reader.closed and recorded.reader.error is None
    broken = Recorded()
    broken.reader.connection_lost(ConnectionResetError("reset"))
    assert broken.ends == 1 and isinstance(broken.reader.error, ConnectionResetError)


def test_flow_control_and_the_end_still_reach_the_writers_protocol() -> None:
    recorded = Recorded()
    recorded.reader.pause_writing()
    recorded.reader.resume_writing()
    recorded.reader.connection_lost(None)
    assert recorded.transport.opening.calls == ["pause", "resume", "lost None"]


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peers = socket.socketpair()
    ours.setblocking(False)
    yield ours, peers
    ours.close()
    peers.close()


def test_poll_reads_what_waits_in_the_socket_in_pieces_and_nothing_when_there_is_nothing(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peers = socket_pair
    recorded = Recorded(ours)
    assert recorded.reader.can_poll
    recorded.reader.poll()  # nothing there: no wait, nothing handed on
    assert recorded.acknowledged == [] and not recorded.reader.closed
    many = ids(BUFFER_SIZE // protocol.BATCH_ID_SIZE * 2)  # more than one read's worth
    data = ack_frames([ids(1), many])
    peers.sendall(data[:3])  # a piece of a header
    recorded.reader.poll()
    assert recorded.acknowledged == []
    peers.sendall(data[3:])
    recorded.reader.poll()
    assert recorded.acknowledged == [*ids(1), *many]


def test_poll_sees_the_peer_gone_after_its_last_acknowledgements(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peers = socket_pair
    recorded = Recorded(ours)
    peers.sendall(ack_frames([ids(2)]))
    peers.close()
    recorded.reader.poll()
    assert recorded.acknowledged == ids(2)
    recorded.reader.poll()  # one read per poll while it gets less than it asked for: the end at the next
    assert recorded.reader.closed and recorded.ends == 1 and recorded.reader.error is None
    assert not recorded.reader.can_poll


def test_the_end_of_the_connection_first_reads_the_acknowledgements_waiting_in_the_socket(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peers = socket_pair
    recorded = Recorded(ours)
    peers.sendall(ack_frames([ids(1), ids(1, 1), ids(3, 2)]))  # never polled: they wait in the socket
    recorded.reader.connection_lost(BrokenPipeError("a write found it broken"))
    assert recorded.acknowledged == ids(5) and recorded.ends == 1
    assert isinstance(recorded.reader.error, BrokenPipeError)  # the transport's reason, with data waiting
    assert recorded.transport.opening.calls == ["lost a write found it broken"]


def test_over_tls_the_reader_never_reads_the_socket_itself(socket_pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peers = socket_pair
    recorded = Recorded(ours)
    recorded.transport.get_extra_info = lambda name: {"socket": ours, "sslcontext": object()}.get(name)  # type: ignore[method-assign]
    tls = AckReader(FakeWriter(recorded.transport), recorded.on_acks, lambda _: None, "test peer")  # type: ignore[arg-type]
    peers.sendall(ack_frames([ids(1)]))
    tls.poll()
    assert not tls.can_poll and recorded.acknowledged == []
    assert ours.recv(100) == ack_frames([ids(1)])  # still there for the SSL transport


def test_taking_over_reads_what_the_opening_reader_held_beyond_the_welcome_and_its_end() -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(ack_frames([ids(2)]))
        recorded = Recorded()
        taken = AckReader.take_over(reader, FakeWriter(recorded.transport), recorded.on_acks, recorded.on_closed, "x")  # type: ignore[arg-type]
        recorded.reader = taken
        assert recorded.transport.protocol is taken and recorded.acknowledged == ids(2) and not taken.closed
        ended = asyncio.StreamReader()
        ended.feed_eof()
        other = Recorded()
        gone = AckReader.take_over(ended, FakeWriter(other.transport), other.on_acks, lambda _: None, "x")  # type: ignore[arg-type]
        assert gone.closed and gone.error is None

    asyncio.run(asyncio.wait_for(scenario(), 10))
