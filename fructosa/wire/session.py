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
