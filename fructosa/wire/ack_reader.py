"""Reading a sending session's acknowledgements: in the callback that receives them, or at the sender's own pace.

Once a session is open, the peer sends only ``A`` frames (batch ids that are safe on its side).
:class:`AckReader` takes the connection over from the opening's ``StreamReader`` and parses
them where the bytes arrive: the transport's read callback, with no task to wake, no future per
read, and a small buffer of its own instead of asyncio's 256-KiB one per ``recv``.

An agent, whose data comes in ticks, need not be woken for each acknowledgement at all: over a
plain TCP connection whose transport is told not to read, :meth:`AckReader.poll` reads what waits
in the socket directly (one non-blocking ``read``), from the agent's own tick, so the previous
tick's acknowledgement costs neither a wakeup nor a pass of the event loop. A peer that closed
the connection or reset it is seen by that read too (end of file, or the error). When the
connection ends otherwise (a write finds it broken, or the sender closes it), what waits in
the socket is read once more before it closes: the batches the peer acknowledged are not sent
again, however many acknowledgements waited for the next poll.

Writing stays with the transport and its ``StreamWriter``: the flow-control calls (and the
connection's end) are passed on to the protocol the reader replaced, so ``writer.drain()`` still works.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable, Collection

from . import protocol

_LENGTH = struct.Struct("!I")
"""A frame's header (see :func:`fructosa.wire.protocol.encode_frame`)."""
_HEADER_SIZE = protocol.HEADER_SIZE
_ACK = protocol.ACK[0]
_ONE_ACK = 1 + protocol.BATCH_ID_SIZE
"""The length of an acknowledgement frame of one batch id (the usual one: an agent's tick's batch)."""
BUFFER_SIZE = 4096
"""Bytes read at most per read: an acknowledgement frame of a full agent window (32 ids) is 773 bytes.
A larger frame (up to the frame cap) gets a buffer of its size while it is read."""


class AckReader(asyncio.BufferedProtocol):
    """The acknowledgements of one connection, handed to ``on_acks`` as lists of batch ids in the
    order they came; ``on_closed`` is told once (with this reader) when the connection ends (end of file, an error,
    a frame other than an acknowledgement), after which :attr:`error` says why (None: closed
    cleanly by the peer). Exceptions of ``on_acks`` end the connection the same way."""

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        on_acks: Callable[[list[bytes]], None],
        on_closed: Callable[[AckReader], None],
        peer_name: str,
    ) -> None:
        self.transport = writer.transport
        self.on_acks = on_acks
        self.on_closed = on_closed
        self.peer_name = peer_name
        self.closed = False
        self.error: BaseException | None = None
        self._buffer = bytearray(BUFFER_SIZE)
        self._filled = 0
        self._previous = self.transport.get_protocol()
        """The protocol of the opening (a StreamReaderProtocol): the writer's flow control still goes through it."""
        self.fd = -1
        """The socket's descriptor when it may be used directly (:meth:`poll` reads it, a sender may
        write a frame to it): plain TCP (over TLS the socket carries records only the SSL transport
        can read and write)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None and self.transport.get_extra_info("sslcontext") is None:
            self.fd = sock.fileno()

    @classmethod
    def take_over(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_acks: Callable[[list[bytes]], None],
        on_closed: Callable[[AckReader], None],
        peer_name: str,
    ) -> AckReader:
        """The reader of the connection that ``reader`` and ``writer`` opened a session on, from now on.

        Whatever the opening's reader holds beyond the welcome (nothing, from a peer that follows the
        protocol: it has nothing to acknowledge yet) is read first, and an end it already saw is kept."""
        acks = cls(writer, on_acks, on_closed, peer_name)
        writer.transport.set_protocol(acks)
        leftover = bytes(getattr(reader, "_buffer", b""))  # StreamReader keeps no public way to take it
        if leftover:
            acks._received(leftover)
        if not acks.closed:
            if reader.exception() is not None:
                acks._close(reader.exception())
            elif getattr(reader, "_eof", False):
                acks._close(None)
        return acks

    @property
    def can_poll(self) -> bool:
        """Whether :meth:`poll` can read (plain TCP, not closed)."""
        return self.fd >= 0 and not self.closed

    def poll(self) -> None:
        """Read what the peer sent that waits in the socket, without the event loop, and handle it.

        Only while the transport itself does not read (its reading paused, or its connection
        lost), so the two never share the stream; a no-op over TLS or once closed. A read that gets less than it asked
        for ends the poll (one system call in the usual case): an end of file right behind the
        data is seen by the next poll."""
        if self.fd < 0:
            return
        while not self.closed:
            try:
                data = os.read(self.fd, BUFFER_SIZE)
            except BlockingIOError:
                return
            except OSError as error:
                self._close(error)
                return
            if not data:
                self._close(None)
                return
            if self._filled:
                self._received(data)
            else:  # the usual case: whole frames, handled from the bytes read
                taken = self._take_frames(data, len(data))
                if taken < len(data):
                    self._received(data[taken:])
            if len(data) < BUFFER_SIZE:
                return  # the socket had no more

    # -- asyncio's protocol ---------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        self._keep_partial(self._take_frames(self._buffer, self._filled))

    def eof_received(self) -> bool:
        self._close(None)
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self.fd >= 0 and not self.closed:
            self.poll()  # the transport is done with the socket, not yet closed: what waits there still counts
        self._close(exc)
        self._previous.connection_lost(exc)  # ends the writer's drain

    def pause_writing(self) -> None:
        self._previous.pause_writing()

    def resume_writing(self) -> None:
        self._previous.resume_writing()

    # -- frames ---------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        """Bytes after a partial frame (or from the opening's reader): into the buffer, then handled."""
        end = self._filled + len(data)
        if end > len(self._buffer):
            self._grow(end)
        self._buffer[self._filled : end] = data
        self._filled = end
        self._keep_partial(self._take_frames(self._buffer, end))

    def _take_frames(self, data: bytes | bytearray, end: int) -> int:
        """Hand on every complete frame in ``data[:end]``; returns the bytes they took (all of
        them once the connection is over: a frame other than an acknowledgement, a length
        outside the cap, or ``on_acks`` failing end it)."""
        start = 0
        batch_ids: list[bytes] = []  # those of consecutive frames go on together: one call for a poll's frames
        try:
            while end - start >= _HEADER_SIZE and not self.closed:
                (length,) = _LENGTH.unpack_from(data, start)
                if not 0 < length <= protocol.MAX_FRAME:
                    self._hand_on(batch_ids)
                    protocol.frame_length(bytes(data[start : start + _HEADER_SIZE]))  # raises why
                stop = start + _HEADER_SIZE + length
                if stop > end:
                    break
                if data[start + _HEADER_SIZE] != _ACK:
                    self._hand_on(batch_ids)
                    kind, _ = protocol.split_frame(bytes(data[start + _HEADER_SIZE : stop]))  # an unknown kind raises
                    raise protocol.ProtocolError(f"unexpected frame {kind!r} from {self.peer_name}")
                if length == _ONE_ACK:
                    batch_ids.append(bytes(data[start + _HEADER_SIZE + 1 : stop]))
                else:  # (those before first: this one may be malformed)
                    self._hand_on(batch_ids)
                    batch_ids = protocol.decode_acks(bytes(data[start + _HEADER_SIZE + 1 : stop]))
                start = stop
            self._hand_on(batch_ids)
        except Exception as error:
            self._close(error)
            self.transport.close()
            return end
        return start

    def _hand_on(self, batch_ids: list[bytes]) -> None:
        """The acknowledgements taken (before the end of the data, or a frame that ends the connection)."""
        if batch_ids:
            self.on_acks(batch_ids)

    def _keep_partial(self, taken: int) -> None:
        """Move the partial frame after the ``taken`` bytes to the buffer's start, with room for all of it."""
        buffer, rest = self._buffer, self._filled - taken
        if taken:
            buffer[:rest] = buffer[taken : self._filled]
            self._filled = rest
        if rest >= _HEADER_SIZE:  # its length was checked against the cap
            needed = _HEADER_SIZE + _LENGTH.unpack_from(buffer)[0]
            if needed > len(buffer):
                self._grow(needed)
        elif rest == 0 and len(buffer) > BUFFER_SIZE:
            self._buffer = bytearray(BUFFER_SIZE)  # a large frame was read: back to the small buffer

    def _grow(self, size: int) -> None:
        """A new buffer (views of the old one may still be held by a transport)."""
        grown = bytearray(size)
        grown[: self._filled] = self._buffer[: self._filled]
        self._buffer = grown

    def _close(self, error: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = error
        self.on_closed(self)


class LateBatches:
    """The batches whose acknowledgement is late while the transport does not read: a batch in
    flight when reading stopped, or at one poll, and still unacknowledged at the next poll. The
    transport then reads until they are acknowledged (a late acknowledgement, or a peer going away
    right then, is not left waiting for another tick)."""

    def __init__(self) -> None:
        self._unread: frozenset[bytes] | set[bytes] = frozenset()
        """Batches in flight when the transport last stopped reading or at the last poll."""
        self._late: frozenset[bytes] | set[bytes] = frozenset()

    def reading_stopped(self, in_flight: Collection[bytes]) -> None:
        self._unread = set(in_flight)

    def polled(self, in_flight: Collection[bytes]) -> None:
        if in_flight:
            self._late = self._unread.intersection(in_flight)
            self._unread = set(in_flight)
        else:
            self._late = self._unread = frozenset()

    def any_in(self, in_flight: Collection[bytes]) -> bool:
        return not self._late.isdisjoint(in_flight)
