"""The client side of a session's opening: challenge, hello, welcome.

lagent and an lmaster relaying to an upstream lmaster open their sessions
the same way (see :mod:`fructosa.wire.protocol`); with a shared secret both ends
prove they hold it before any data flows.
"""

from __future__ import annotations

import asyncio

from . import auth, protocol

WELCOME_TIMEOUT = 10.0


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


# == Server half ===============================================================
#
# What lmaster does on each connection it accepts: the opening seen from the
# accepting side, the acknowledgements it writes, and the ledger of the
# batches it has taken. The client half above and this half change
# independently, so the server half's own imports stay here with it.

from collections import OrderedDict  # noqa: E402
from collections.abc import Callable, Hashable  # noqa: E402

REMEMBERED_BATCHES = 1 << 18
"""Batches kept for duplicate detection (resends come within seconds to
minutes; this covers hours of a large cluster)."""


class AuthenticationError(protocol.ProtocolError):
    """The peer does not prove it knows the shared secret."""


async def accept_session(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    secret: bytes | None,
    *,
    accept_relays: bool,
    timeout: float | None,
    server: str,
) -> dict:
    """Runs the opening on an accepted connection and returns the peer's verified hello.

    Sends the challenge (a fresh nonce, and whether the shared secret is
    required), reads the hello (a started frame must complete within
    ``timeout``), refuses a relay unless ``accept_relays``, checks the hello's
    proof of the secret, and sends the welcome (with lmaster's own proof, and
    ``server`` naming it). Nothing the peer sends after is worth reading
    unless this returns. A refusal is answered with an error welcome, then
    raised: AuthenticationError, or ProtocolError (with a message for the log).
    """
    nonce = auth.new_nonce()
    challenge = {
        "protocol": protocol.PROTOCOL_NAME, "version": protocol.PROTOCOL_VERSION,
        "nonce": nonce, "auth": secret is not None,
    }  # fmt: skip
    writer.write(protocol.encode_json(protocol.CHALLENGE, challenge))
    kind, payload = await read_frame(reader, timeout)
    if kind != protocol.HELLO:
        raise protocol.ProtocolError(f"first frame is {kind!r}, not a hello")
    hello = protocol.check_hello(payload)
    if hello.get("relay") is True and not accept_relays:
        writer.write(protocol.encode_json(protocol.WELCOME, {"error": "relays not accepted here"}))
        raise protocol.ProtocolError(
            f"lmaster {hello['host']!r} wants to relay, but relays are not accepted here "
            "(set [lmaster] accept relays = yes)"
        )
    welcome = {"protocol": protocol.PROTOCOL_NAME, "version": protocol.PROTOCOL_VERSION}
    if secret is not None:
        try:
            _check_proof(secret, nonce, hello)
        except AuthenticationError:
            writer.write(protocol.encode_json(protocol.WELCOME, {"error": "authentication failed"}))
            raise
        welcome["mac"] = auth.master_mac(secret, str(hello.get("nonce", "")), nonce)
    welcome["master"] = server
    writer.write(protocol.encode_json(protocol.WELCOME, welcome))
    return hello


def _check_proof(secret: bytes, nonce: str, hello: dict) -> None:
    """AuthenticationError unless the hello's MAC proves its sender holds ``secret``
    (it covers our fresh ``nonce``, so a recorded hello is worthless)."""
    if "mac" not in hello:
        raise AuthenticationError(f"agent {hello['host']!r} sent no secret proof (no secret file on the agent?)")
    expected = auth.agent_mac(secret, nonce, str(hello.get("nonce", "")), hello["host"])
    if not auth.macs_equal(expected, hello["mac"]):
        raise AuthenticationError(f"agent {hello['host']!r} does not know the shared secret")


class AckWriter:
    """Coalesces the acknowledgements of one connection into few ``A`` frames.

    Batches become safe one by one (callbacks from the sinks); their ids are
    collected and written once per event-loop iteration. Once ``closed`` (the
    connection ended) acknowledgements are dropped: the agent sends those
    batches again on its next connection, and the ledger acknowledges them there.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.closed = False
        self._pending: list[bytes] = []

    def send(self, batch_id: bytes) -> None:
        if self.closed:
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(batch_id)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if self.closed or self.writer.is_closing():
            return
        per_frame = protocol.MAX_FRAME // protocol.BATCH_ID_SIZE - 1
        for start in range(0, len(pending), per_frame):
            self.writer.write(protocol.encode_acks(pending[start : start + per_frame]))


class BatchLedger:
    """The batches lmaster has taken: one sent again is acknowledged, never relayed twice.

    An agent sends a batch again when the connection broke before its
    acknowledgement arrived, or replays it from its spool after a restart.
    A *key* names one batch: any hashable. Today it is the 24-byte batch id
    (a random session per agent process, and a sequence number); keying by
    ``(host, batch id)`` instead makes the ids per host, so one agent cannot
    claim another's. Each key is pending (its acknowledgements wait for the
    sinks) or safe; beyond ``capacity`` keys the oldest is forgotten.
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
