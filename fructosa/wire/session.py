"""The acknowledged session, both halves: opening it, sending batches, acknowledging them.

lagent and an lmaster relaying to an upstream lmaster are both *senders*:
they open a session the same way (challenge, hello, welcome; with a shared
secret both ends prove they hold it before any data flows, see
:mod:`fructosa.wire.protocol`), then stream numbered batches that the peer
acknowledges once they are safe on its side. :class:`SendingSession` is that
sending half, written once: batch ids (a random session id plus a sequence
number), a bounded window of batches in flight, acknowledgements, sending the
unacknowledged batches again with the same ids after a reconnect (the peer
drops duplicates), heartbeats while idle, and the reconnect loop. What to send
next, in which order, and what an acknowledgement frees is the owner's
business (an :class:`Outbox`): lagent's live samples and disk backlog, a
relay's merged blocks and the downstream batches they carry.

The server half follows at the end of this module: what lmaster does with each
connection it accepts (the opening seen from the accepting side, its
acknowledgements, and the ledger that spots batches it already took).
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from ..backoff import Backoff
from ..loop_clock import loop_clock
from ..ratelog import RateLimitedLog
from . import auth, protocol
from .ack_reader import AckReader, LateBatches
from .direct_write import write_frame

if TYPE_CHECKING:
    import ssl  # named only: lagent without TLS keeps ssl out (wire.auth.keep_openssl_out)

WELCOME_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
SESSION_ID_SIZE = protocol.BATCH_ID_SIZE - 8
FLUSH_POLL = 0.05
CONNECT_ERRORS = (OSError, asyncio.TimeoutError, protocol.ProtocolError, asyncio.IncompleteReadError)
"""What a failed connection attempt (TCP, TLS or the opening) raises."""
STREAM_ERRORS = (OSError, ConnectionError, protocol.ProtocolError, asyncio.IncompleteReadError)
"""What a session that breaks while streaming raises."""
_BATCH_ID = slice(protocol.PAYLOAD_START, protocol.PAYLOAD_START + protocol.BATCH_ID_SIZE)
"""Where a ``D`` frame holds its batch id."""


class IdleTimeout(Exception):
    """The peer sent nothing, not even a heartbeat, for too long."""


async def read_frame(
    reader: asyncio.StreamReader, timeout: float | None = None, idle_timeout: float | None = None
) -> tuple[bytes, bytes]:
    """(kind, payload) of the next frame; both sides of a session read with it.

    With ``idle_timeout`` the peer may stay silent between frames that long
    (raising IdleTimeout after); once a frame has begun it must complete
    within ``timeout`` (asyncio.TimeoutError otherwise; None: no limit).
    """
    if idle_timeout is not None:
        try:
            first = await asyncio.wait_for(reader.readexactly(1), idle_timeout)
        except asyncio.TimeoutError:
            raise IdleTimeout() from None
        header = first + await asyncio.wait_for(reader.readexactly(protocol.HEADER_SIZE - 1), timeout)
    else:
        header = await asyncio.wait_for(reader.readexactly(protocol.HEADER_SIZE), timeout)
    length = protocol.frame_length(header)
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return protocol.split_frame(body)


async def open_session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    secret: bytes | None,
    hello_fields: dict,
    peer_name: str = "lmaster",
) -> dict:
    """Runs the opening on a fresh connection and returns the welcome.

    Raises ProtocolError (with a message for the log) when the server refuses
    us, does not authenticate agents although we hold a secret, or fails to
    prove it holds the secret.
    """
    kind, payload = await asyncio.wait_for(read_frame(reader), WELCOME_TIMEOUT)
    if kind != protocol.CHALLENGE:
        raise protocol.ProtocolError(f"expected a challenge, got frame {kind!r}")
    challenge = protocol.check_version(protocol.decode_json(payload), "challenge")
    if secret is not None and not challenge.get("auth"):
        raise protocol.ProtocolError(
            f"{peer_name} does not authenticate agents (no secret file there); not sending to it"
        )
    nonce = auth.new_nonce()
    hello = {
        "protocol": protocol.PROTOCOL_NAME, "version": protocol.PROTOCOL_VERSION, "host": host, "nonce": nonce,
        **hello_fields,
    }  # fmt: skip
    if secret is not None:
        hello["mac"] = auth.agent_mac(secret, str(challenge.get("nonce")), nonce, host)
    writer.write(protocol.encode_json(protocol.HELLO, hello))
    kind, payload = await asyncio.wait_for(read_frame(reader), WELCOME_TIMEOUT)
    welcome = protocol.decode_json(payload)
    if kind != protocol.WELCOME or "error" in welcome:
        raise protocol.ProtocolError(f"{peer_name} refused: {welcome.get('error', kind)}")
    if secret is not None:
        expected = auth.master_mac(secret, nonce, str(challenge.get("nonce")))
        if not auth.macs_equal(expected, welcome.get("mac")):
            raise protocol.ProtocolError(f"{peer_name} failed to prove it knows the secret; not sending to it")
    return welcome


async def connect(
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    our_host: str,
    secret: bytes | None,
    hello_fields: dict,
    peer_name: str,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A new connection with its session opened; raises one of CONNECT_ERRORS.

    ``tls`` comes from :func:`fructosa.wire.auth.client_context_for`, the one
    place that decides whether a link is encrypted.
    """
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None), CONNECT_TIMEOUT
    )
    try:
        await open_session(reader, writer, our_host, secret, hello_fields, peer_name)
    except BaseException:
        writer.close()
        raise
    return reader, writer


def describe_error(error: BaseException, peer_name: str, opening: bool = True) -> str:
    """One line for the log on why a connection failed (``opening``) or broke."""
    ssl = sys.modules.get("ssl")  # None when this process runs without TLS (auth.keep_openssl_out)
    if ssl is not None and isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate of {peer_name} not trusted: {error.verify_message}"
    if isinstance(error, asyncio.IncompleteReadError):
        if opening:
            return f"connection closed by {peer_name} during the handshake (wrong secret or TLS settings?)"
        return f"connection closed by {peer_name}"
    return str(error) or type(error).__name__


class Outbox(abc.ABC):
    """The owner's side of a :class:`SendingSession`: where to connect, and what to send next.

    A batch is a ``D`` frame's body, batch id first; its *tag* is whatever
    the owner needs back when the peer acknowledges it (a spool record, the
    callbacks of the downstream batches it carries).
    """

    peer_name = "lmaster"
    connected_verb = "connected to"
    """For the log line on each new session (a relay says "relaying to")."""

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """host:port of the peer, for the log."""

    @abc.abstractmethod
    async def dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection with its session opened (usually :func:`connect`)."""

    @abc.abstractmethod
    def next_batch(self) -> tuple[bytes, object] | None:
        """The next batch to send (body, tag), or None when there is nothing."""

    def next_frame(self) -> tuple[bytes, object] | None:
        """The next batch as a whole ``D`` frame (frame, tag), or None: what the session asks for.
        An owner that can build the frame in one go (lagent's tick) says so here."""
        batch = self.next_batch()
        return None if batch is None else (protocol.encode_frame(protocol.DATAPOINTS, batch[0]), batch[1])

    @abc.abstractmethod
    def on_acknowledged(self, tag: object) -> None:
        """The peer holds the batch safely (not told for a batch tagged None: nothing to free)."""

    @abc.abstractmethod
    def backlog(self) -> dict[str, int]:
        """What waits on our side, for the peer (in heartbeats)."""

    @abc.abstractmethod
    def describe_backlog(self) -> str:
        """What waits on our side, for the log."""

    @abc.abstractmethod
    def on_disconnected(self) -> None:
        """The session broke: batches in flight go again after the reconnect, unless
        the owner takes them back (:meth:`SendingSession.take_in_flight`)."""


class HeartbeatTimer:
    """A sending stream's wait for its next heartbeat: ``wake`` is called once the loop time
    ``due()`` has come. When the timer fires and finds it moved on (frames went meanwhile from
    the caller, :meth:`SendingSession.send_now`), it waits on, without waking the stream."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, delay: float, due: Callable[[], float], wake: Callable[[], None]
    ):
        self._loop, self._due, self._wake = loop, due, wake
        self._timer = loop.call_later(max(0.0, delay), self._fire)

    def _fire(self) -> None:
        due = self._due()
        if due <= self._loop.time():
            self._wake()
        else:
            self._timer = self._loop.call_at(due, self._fire)

    def cancel(self) -> None:
        self._timer.cancel()


def heartbeat_wait(
    loop: asyncio.AbstractEventLoop, timeout: float, due: Callable[[], float]
) -> tuple[asyncio.Future, Callable[..., None], HeartbeatTimer]:
    """A stream's wait for work: the future that ends it, what ends it (callable any number of times, with any
    arguments), and the :class:`HeartbeatTimer` that ends it once a heartbeat is due (cancel it after the wait)."""
    woken = loop.create_future()

    def wake(*_: object) -> None:
        if not woken.done():
            woken.set_result(None)

    return woken, wake, HeartbeatTimer(loop, timeout, due, wake)


class SendingSession:
    """Numbered batches to one peer, at most ``max_in_flight`` unacknowledged.

    Batches in flight are kept (in the order first sent) until the peer acknowledges them; after a reconnect they go
    again, with the same ids and before anything new. While nothing goes out for ``heartbeat_interval`` seconds a
    heartbeat carrying :meth:`Outbox.backlog` does, so the peer knows we are alive. :meth:`wake` tells the session
    new data waits; the session looks at the outbox once the callbacks running then are done, so data queued at one
    instant travels in one batch.

    Acknowledgements are read where they arrive (:class:`~fructosa.wire.ack_reader.AckReader`, no task). With
    ``defer_acks`` (an agent, whose data comes in ticks) over plain TCP, they are not even waited for: while at most
    half the window is in flight, the transport does not read the connection (the acknowledgements wait in the
    kernel) and every :meth:`wake` or :meth:`send_now` first reads what waits there (:meth:`send_now` once
    ``ack_poll_batches`` batches are in flight), with one non-blocking read from the caller; so the
    acknowledgements of the ticks before, or a peer that closed the connection, are seen at a tick with no wakeup or
    loop pass of their own. A batch that was in flight at the previous read (or when the transport stopped reading)
    and is still unacknowledged makes the transport read until it is (a late acknowledgement, or the end of a peer
    going away right then, is not left waiting for another tick). A heartbeat reads too, so a peer that went away is
    seen within ``heartbeat_interval`` even without ticks. With more than half the window in flight (a backlog
    draining, a slow peer), on :meth:`flush`, without ``defer_acks`` (a relay) and over TLS (whose socket only the
    SSL transport can read), the transport reads and each acknowledgement is handled on arrival.
    """

    def __init__(
        self,
        outbox: Outbox,
        log: logging.Logger,
        max_in_flight: int,
        heartbeat_interval: float,
        defer_acks: bool = False,
        ack_poll_batches: int = 0,
    ) -> None:
        self.outbox = outbox
        self.defer_acks = defer_acks
        self.ack_poll_batches = ack_poll_batches
        self.log = log
        self.max_in_flight = max_in_flight
        self.heartbeat_interval = heartbeat_interval
        self.id = os.urandom(SESSION_ID_SIZE)
        self._last_sequence = 0
        self.in_flight: OrderedDict[bytes, tuple[bytes, object]] = OrderedDict()
        """batch id → (frame, tag), in the order first sent."""
        self.connected = asyncio.Event()
        self.sent = 0
        """Batches sent for the first time (not counting resends)."""
        self.resent = 0
        self.acknowledged = 0
        self.connects = 0
        self._heartbeat_due = False
        self._waiting: Callable[..., None] | None = None
        """While :meth:`stream` waits for work: what ends the wait."""
        self._woken: asyncio.Future | None = None
        """While :meth:`stream` waits for work: the future that ends the wait."""
        self._last_sent = 0.0
        """Loop time the last frame went (a heartbeat is due ``heartbeat_interval`` after it)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: Callable[[], float] = time.monotonic
        """The loop's clock (:func:`~fructosa.loop_clock.loop_clock`), read where a tick sends."""
        self._writer: asyncio.StreamWriter | None = None
        self._acks: AckReader | None = None
        """The current connection's acknowledgement reader."""
        self._reading_paused = False
        """Whether the transport is told not to read (the acknowledgements are polled instead)."""
        self._late = LateBatches()
        self._connect_log = RateLimitedLog(log, period=300.0)

    def new_batch_id(self) -> bytes:
        self._last_sequence += 1
        return self.id + self._last_sequence.to_bytes(8, "big")  # protocol.batch_id's format, one call less a tick

    @property
    def window_full(self) -> bool:
        return len(self.in_flight) >= self.max_in_flight

    def wake(self) -> None:
        """New data waits to be sent (it goes once the window has room)."""
        self._poll_acks()
        self._wake_stream()

    def _wake_stream(self) -> None:
        if self._waiting is not None and not self.window_full:
            self._waiting()

    def send_now(self) -> bool:
        """New data waits, all of it queued: as :meth:`wake`, but the batches go right away from the caller when the
        stream is idle, the window has room and nothing waits in the transport's buffer (straight to the socket, see
        :func:`~fructosa.wire.direct_write.write_frame`): no pass of the stream's loop, no drain. Otherwise, or once
        the buffer holds data, the stream takes over. The acknowledgements waiting are read first, once
        ``ack_poll_batches`` batches are in flight. Whether everything the outbox had went here."""
        loop, acks = self._loop, self._acks
        if loop is None or acks is None:
            self._wake_stream()
            return False
        now = self._clock()
        if self._reading_paused and len(self.in_flight) >= self.ack_poll_batches:
            self._poll_acks()
        writer, woken = self._writer, self._woken
        if woken is None or woken.done() or writer is None or self._heartbeat_due or acks.closed:
            self._wake_stream()
            return False
        # the connection's transport, as the writer's (whose property is one more method to call)
        transport, in_flight, next_frame = acks.transport, self.in_flight, self.outbox.next_frame
        if transport.is_closing() or transport.get_write_buffer_size():
            self._wake_stream()  # the stream sees the break, or drains before it writes more
            return False
        batch: tuple[bytes, object] | None = None
        while len(in_flight) < self.max_in_flight:
            batch = next_frame()
            if batch is None:
                break
            frame = batch[0]
            in_flight[frame[_BATCH_ID]] = batch
            self.sent += 1
            self._last_sent = now
            if not write_frame(transport, acks.fd, frame):  # the transport holds it now: as above
                self._wake_stream()
                return False
        if not self._reading_paused or len(in_flight) > self.max_in_flight // 2:
            self._fit_reading()  # (a poll fits the reading itself)
        return batch is None

    def heartbeat_soon(self) -> None:
        """Send a heartbeat as soon as the data waiting has gone (the backlog carries news for the peer)."""
        self._heartbeat_due = True
        if self._waiting is not None:
            self._waiting()

    def take_in_flight(self) -> list[tuple[bytes, object]]:
        """Forget the batches in flight and hand them back (body, tag), oldest first: an owner that keeps them
        elsewhere (a disk spool) sends them from there."""
        taken = [(frame[protocol.PAYLOAD_START :], tag) for frame, tag in self.in_flight.values()]
        self.in_flight.clear()
        return taken

    def reconnect(self) -> None:
        """Drop the current connection (the peer's address or security changed); :meth:`run` dials again at once and
        resends what is in flight."""
        if self._writer is not None:
            self._writer.close()

    async def flush(self, timeout: float, unsent: Callable[[], bool], only_while_connected: bool = False) -> bool:
        """Wait up to ``timeout`` seconds for everything to be acknowledged (nothing ``unsent()``, nothing in
        flight); with ``only_while_connected``, give up as soon as the peer is away. Returns whether everything was."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.defer_acks = False  # the acknowledgements are what we wait for now
        self._fit_reading()
        while unsent() or self.in_flight:
            if loop.time() >= deadline or (only_while_connected and not self.connected.is_set()):
                return False
            await asyncio.sleep(FLUSH_POLL)
        return True

    async def run(self) -> None:
        """Connect, stream, reconnect with backoff; until cancelled."""
        self._loop = asyncio.get_running_loop()
        backoff = Backoff(maximum=30.0)
        outbox = self.outbox
        while True:
            try:
                reader, writer = await outbox.dial()
            except CONNECT_ERRORS as error:
                self._connect_log.log(
                    logging.WARNING, "connect", "cannot reach %s %s (%s); %s", outbox.peer_name, outbox.address,
                    describe_error(error, outbox.peer_name), outbox.describe_backlog(),
                )  # fmt: skip
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._connect_log = RateLimitedLog(self.log, period=300.0)
            self.log.info(
                "%s %s %s (%s)", outbox.connected_verb, outbox.peer_name, outbox.address, outbox.describe_backlog()
            )
            self.connects += 1
            self._writer = writer
            self.connected.set()
            try:
                await self.stream(reader, writer)
            except STREAM_ERRORS as error:
                self.log.warning(
                    "lost connection to %s %s: %s",
                    outbox.peer_name, outbox.address, describe_error(error, outbox.peer_name, opening=False),
                )  # fmt: skip
            finally:
                self.connected.clear()
                self._writer = None
                self._acks = None
                self._reading_paused = False
                self._late = LateBatches()
                writer.close()
                outbox.on_disconnected()

    async def stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send over one opened session until it breaks (raises why)."""
        acks = AckReader.take_over(reader, writer, self._acknowledged, self._connection_ended, self.outbox.peer_name)
        self._acks = acks
        loop = self._loop = asyncio.get_running_loop()
        self._clock = loop_clock(loop)
        for frame, _ in self.in_flight.values():
            writer.write(frame)
            self.resent += 1
        await writer.drain()
        self._last_sent = loop.time()
        while True:
            if acks.closed:
                raise acks.error or ConnectionError(f"connection closed by {self.outbox.peer_name}")
            batch = None if self.window_full else self.outbox.next_frame()
            if batch is not None:
                self.in_flight[batch[0][_BATCH_ID]] = batch  # into the window and onto the wire
                writer.write(batch[0])
                self.sent += 1
                self._last_sent = loop.time()
                await writer.drain()
                continue
            wait = 0.0 if self._heartbeat_due else self._last_sent + self.heartbeat_interval - loop.time()
            await self._wait_for_work(wait)
            if self._heartbeat_due or loop.time() - self._last_sent >= self.heartbeat_interval:
                self._poll_acks()  # the peer may be gone: no heartbeat into a closed connection
                if acks.closed:
                    continue
                self._heartbeat_due = False
                backlog = json.dumps(self.outbox.backlog()).encode()
                writer.write(protocol.encode_frame(protocol.HEARTBEAT, backlog))
                await writer.drain()
                self._last_sent = loop.time()

    async def _wait_for_work(self, timeout: float) -> None:
        """Until an acknowledgement comes (when the window is full), new data comes (when the window has room), the
        connection breaks, or a heartbeat is due (in ``timeout``, unless frames went meanwhile from
        :meth:`send_now`: the timer then waits on, without waking us). Called right after the outbox had nothing or
        the window was full, with no await in between, so a wake-up cannot slip past. One future and one timer, no
        task."""
        loop = self._loop
        assert loop is not None
        due = lambda: 0.0 if self._heartbeat_due else self._last_sent + self.heartbeat_interval  # noqa: E731
        woken, wake, timer = heartbeat_wait(loop, timeout, due)
        self._waiting, self._woken = wake, woken
        self._fit_reading()
        try:
            await woken
        finally:
            self._waiting = self._woken = None
            timer.cancel()

    # -- reading the acknowledgements ------------------------------------------

    def _reading_needed(self) -> bool:
        """Whether the transport must read now, waking us for each acknowledgement: unless they can wait for the
        next poll (``defer_acks``, plain TCP, at most half the window in flight, no batch late: unacknowledged at
        two polls in a row, or at a poll after reading stopped)."""
        acks = self._acks
        if acks is None or not (self.defer_acks and acks.can_poll):
            return True
        return len(self.in_flight) > self.max_in_flight // 2 or self._late.any_in(self.in_flight)

    def _fit_reading(self) -> None:
        acks = self._acks
        if acks is None or acks.closed:
            return
        if self._reading_needed():
            if self._reading_paused:
                self._reading_paused = False
                acks.transport.resume_reading()
        elif not self._reading_paused:
            self._reading_paused = True
            self._late.reading_stopped(self.in_flight)
            acks.transport.pause_reading()

    def _poll_acks(self) -> None:
        """Read the acknowledgements waiting in the socket, while the transport does not."""
        acks = self._acks
        if self._reading_paused and acks is not None:
            acks.poll()
            if self.in_flight:  # else none is late, and ids named before never come back: nothing to note
                self._late.polled(self.in_flight)
                self._fit_reading()

    def _acknowledged(self, batch_ids: list[bytes]) -> None:
        """The peer holds these batches: out of the window, and the owner told."""
        in_flight = self.in_flight
        was_full = len(in_flight) >= self.max_in_flight
        for batch_id in batch_ids:
            entry = in_flight.pop(batch_id, None)
            if entry is None:
                continue  # acknowledged twice, or taken back after a disconnection
            self.acknowledged += 1
            if entry[1] is not None:
                self.outbox.on_acknowledged(entry[1])
        if self._waiting is None:
            return
        if was_full or not self.defer_acks:
            self._waiting()
        elif not self._reading_paused:
            self._fit_reading()  # read on arrival: the next acknowledgements may wait for the next poll again

    def _connection_ended(self, acks: AckReader) -> None:
        """The peer closed the connection or it broke (:meth:`stream` raises why)."""
        if acks is self._acks and self._waiting is not None:
            self._waiting()


# == Server half ===============================================================
#
# What lmaster does on each connection it accepts: the opening seen from the
# accepting side, the acknowledgements it writes, and the ledger of the
# batches it has taken. The client half above and this half change
# independently.

REMEMBERED_BATCHES = 1 << 18
"""Batches kept for duplicate detection (resends come within seconds to
minutes; this covers hours of a large cluster)."""


class AuthenticationError(protocol.ProtocolError):
    """The peer does not prove it knows the shared secret."""


class SessionRefused(protocol.ProtocolError):
    """A verified peer refused all the same (lmaster has no room for it)."""


async def accept_session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    secret: bytes | None,
    *,
    accept_relays: bool,
    timeout: float | None,
    server: str,
    admit: Callable[[dict], str | None] | None = None,
) -> dict:
    """Runs the opening on an accepted connection and returns the peer's verified hello.

    Sends the challenge (a fresh nonce, and whether the shared secret is
    required), reads the hello (:func:`read_hello`: at most
    :data:`~fructosa.wire.protocol.MAX_HELLO` bytes, complete within
    ``timeout`` seconds of the challenge), refuses a relay unless ``accept_relays``,
    checks the hello's proof of the secret, asks ``admit`` (with the verified
    hello, just before the welcome: a reason to refuse, or None), and sends
    the welcome (with lmaster's own proof, and ``server`` naming it). Nothing
    the peer sends after is worth reading unless this returns. A refusal is
    answered with an error welcome, so the peer can log why, then raised:
    AuthenticationError, SessionRefused, or ProtocolError (with a message for
    the log).
    """
    nonce = auth.new_nonce()
    challenge = {
        "protocol": protocol.PROTOCOL_NAME, "version": protocol.PROTOCOL_VERSION,
        "nonce": nonce, "auth": secret is not None,
    }  # fmt: skip
    writer.write(protocol.encode_json(protocol.CHALLENGE, challenge))
    try:  # no await before this: the hello's deadline counts from the challenge
        hello = protocol.check_hello(await read_hello(reader, timeout))
    except protocol.ProtocolError as error:
        _refuse(writer, str(error))
        raise
    if hello.get("relay") is True and not accept_relays:
        _refuse(writer, "relays not accepted here")
        raise protocol.ProtocolError(
            f"lmaster {hello['host']!r} wants to relay, but relays are not accepted here "
            "(set [lmaster] accept relays = yes)"
        )
    welcome = {"protocol": protocol.PROTOCOL_NAME, "version": protocol.PROTOCOL_VERSION}
    if secret is not None:
        try:
            _check_proof(secret, nonce, hello)
        except AuthenticationError:
            _refuse(writer, "authentication failed")
            raise
        welcome["mac"] = auth.master_mac(secret, str(hello.get("nonce", "")), nonce)
    refusal = admit(hello) if admit is not None else None
    if refusal is not None:
        _refuse(writer, refusal)
        raise SessionRefused(refusal)
    welcome["master"] = server
    writer.write(protocol.encode_json(protocol.WELCOME, welcome))
    return hello


async def read_hello(reader: asyncio.StreamReader, timeout: float | None) -> bytes:
    """The payload of the first frame, which must be a hello of at most
    :data:`~fructosa.wire.protocol.MAX_HELLO` bytes, complete within ``timeout``
    seconds (asyncio.TimeoutError otherwise): its length and kind are checked
    before a byte of its payload is read, so a peer announcing a 1 MiB hello
    costs a few bytes of buffer, not a megabyte."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - loop.time())

    head = await asyncio.wait_for(reader.readexactly(protocol.HEADER_SIZE + 1), left())
    length = protocol.frame_length(head[: protocol.HEADER_SIZE])
    kind = head[protocol.HEADER_SIZE :]
    if kind != protocol.HELLO:
        raise protocol.ProtocolError(f"first frame is {kind!r}, not a hello")
    if length - 1 > protocol.MAX_HELLO:
        raise protocol.ProtocolError(f"hello of {length - 1} bytes (at most {protocol.MAX_HELLO})")
    return await asyncio.wait_for(reader.readexactly(length - 1), left())


def _refuse(writer: asyncio.StreamWriter, reason: str) -> None:
    """The error welcome: the peer logs why it was refused before the connection closes."""
    writer.write(protocol.encode_json(protocol.WELCOME, {"error": reason[:500]}))


def _check_proof(secret: bytes, nonce: str, hello: dict) -> None:
    """AuthenticationError unless the hello's MAC proves its sender holds ``secret``
    (it covers our fresh ``nonce``, so a recorded hello is worthless)."""
    if "mac" not in hello:
        raise AuthenticationError(f"agent {hello['host']!r} sent no secret proof (no secret file on the agent?)")
    expected = auth.agent_mac(secret, nonce, str(hello.get("nonce", "")), hello["host"])
    if not auth.macs_equal(expected, hello["mac"]):
        raise AuthenticationError(f"agent {hello['host']!r} does not know the shared secret")


class AckFlusher:
    """Writes the acknowledgements of every connection once per event-loop iteration.

    The sinks make many batches safe at once (one write to carbon carries the
    batches of hundreds of agents); one callback writes all their ``A``
    frames, instead of one callback per connection.
    """

    def __init__(self) -> None:
        self._writers: list[AckWriter] = []

    def schedule(self, acks: AckWriter) -> None:
        """``acks`` has its first pending acknowledgement: write it in this iteration's flush."""
        if not self._writers:
            asyncio.get_running_loop().call_soon(self.flush)
        self._writers.append(acks)

    def flush(self) -> None:
        writers, self._writers = self._writers, []
        for acks in writers:
            acks.flush()


class AckWriter:
    """Coalesces the acknowledgements of one connection into few ``A`` frames.

    Batches become safe one by one (callbacks from the sinks); their ids are
    collected and written once per event-loop iteration (by ``flusher``,
    shared by the connections of one server, or by a callback of this
    writer's own). Once ``closed`` (the connection ended) acknowledgements are
    dropped: the agent sends those batches again on its next connection, and
    the ledger acknowledges them there.
    """

    def __init__(self, writer: asyncio.StreamWriter, flusher: AckFlusher | None = None) -> None:
        self.writer = writer
        self.closed = False
        self._pending: list[bytes] = []
        self._flusher = flusher

    def send(self, batch_id: bytes) -> None:
        if self.closed:
            return
        if not self._pending:
            if self._flusher is not None:
                self._flusher.schedule(self)
            else:
                asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(batch_id)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if self.closed or self.writer.is_closing() or not pending:
            return
        if len(pending) == 1:
            self.writer.write(protocol.encode_acks(pending))
            return
        per_frame = protocol.MAX_FRAME // protocol.BATCH_ID_SIZE - 1
        self.writer.writelines(
            [protocol.encode_acks(pending[start : start + per_frame]) for start in range(0, len(pending), per_frame)]
        )


class BatchLedger:
    """The batches lmaster has taken: one sent again is acknowledged, never relayed twice.

    An agent sends a batch again when the connection broke before its
    acknowledgement arrived, or replays it from its spool after a restart.
    A *key* names one batch: any hashable. lmaster uses ``(host, batch id)``,
    the host being the one the sender's hello named (a relay's own name), and
    the batch id its 24 bytes (a random session per agent process, and a
    sequence number): ids are per host, so a peer that learns another agent's
    batch ids and sends them first takes nothing from that agent. Each key is
    pending (its acknowledgements wait for the sinks) or safe; beyond
    ``capacity`` keys the oldest is forgotten.
    """

    def __init__(self, capacity: int = REMEMBERED_BATCHES) -> None:
        self.capacity = capacity
        # key → the acknowledgements waiting while pending, None once safe
        self._batches: OrderedDict[Hashable, list[Callable[[], None]] | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._batches)

    def lookup(self, key: Hashable) -> str | None:
        """``"pending"``, ``"safe"``, or None for a batch not taken (or forgotten)."""
        if key not in self._batches:
            return None
        return "pending" if self._batches[key] is not None else "safe"

    def admit(self, key: Hashable, acknowledge: Callable[[], None]) -> Callable[[], None] | None:
        """Take the batch ``key``, whose ``acknowledge`` must run once it is safe.

        A batch taken before: None, and ``acknowledge`` runs when the first
        copy is safe (at once if it is already). A new batch: the function to
        call once every sink holds it, which runs the acknowledgements waiting
        by then (this one, and those of copies sent again meanwhile); if the
        batch is refused instead, :meth:`forget` it.
        """
        if key in self._batches:
            waiters = self._batches[key]
            if waiters is None:
                acknowledge()
            else:
                waiters.append(acknowledge)
            return None
        waiters = [acknowledge]
        self._batches[key] = waiters
        if len(self._batches) > self.capacity:
            self._batches.popitem(last=False)

        def safe() -> None:
            if self._batches.get(key) is waiters:
                self._batches[key] = None
            for waiting in waiters:
                waiting()

        return safe

    def forget(self, key: Hashable) -> None:
        """A batch refused after all (undecodable): a copy sent again is a new batch."""
        self._batches.pop(key, None)
