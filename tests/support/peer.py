"""A minimal blocking client of the agent → master protocol, for tests that
play an agent (honest or not) against a real lmaster."""

from __future__ import annotations

import os
import socket
import struct
import time

from fructosa.wire import auth, protocol
from fructosa.wire.blocks import Block


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed by lmaster")
        data += chunk
    return data


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when lmaster closes (or resets) the connection within ``timeout``;
    whatever it sends meanwhile (a challenge, acknowledgements) is read and dropped."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:  # reset
        return True


def read_frame(sock: socket.socket) -> tuple[bytes, bytes]:
    (length,) = struct.unpack("!I", recv_exactly(sock, 4))
    body = recv_exactly(sock, length)
    return body[:1], body[1:]


def hello_frame(host: str, challenge: dict, secret: bytes | None = None) -> bytes:
    nonce = auth.new_nonce()
    message = {"protocol": "fructosa", "version": 1, "host": host, "agent": "test-peer", "nonce": nonce}
    if secret is not None:
        message["mac"] = auth.agent_mac(secret, challenge["nonce"], nonce, host)
    return protocol.encode_json(protocol.HELLO, message)


def handshake(sock: socket.socket, host: str, secret: bytes | None = None) -> dict:
    """Challenge, hello, welcome; returns the welcome (may hold an "error")."""
    kind, payload = read_frame(sock)
    assert kind == protocol.CHALLENGE, kind
    sock.sendall(hello_frame(host, protocol.decode_json(payload), secret))
    kind, payload = read_frame(sock)
    assert kind == protocol.WELCOME, kind
    return protocol.decode_json(payload)


class Peer:
    """One connection speaking the protocol: ``send`` batches, ``acks`` read back."""

    def __init__(self, port: int, host: str = "peer", secret: bytes | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.welcome = handshake(self.sock, host, secret)
        self.session = os.urandom(16)
        self.sequence = 0

    def send(self, samples: list[dict], sequence: int | None = None) -> bytes:
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        self.sock.sendall(protocol.encode_samples(samples, self.session, sequence))
        return protocol.batch_id(self.session, sequence)

    def send_datapoints(self, datapoints: list, sequence: int | None = None) -> bytes:
        """One ``D`` frame, as lagent sends (``datapoints`` as ``(path, (time, value))``)."""
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        body = protocol.batch_id(self.session, sequence) + Block.of(datapoints, samples=1).encode()
        self.sock.sendall(protocol.encode_frame(protocol.DATAPOINTS, body))
        return protocol.batch_id(self.session, sequence)

    def read_acks(self) -> list[bytes]:
        kind, payload = read_frame(self.sock)
        assert kind == protocol.ACK, kind
        return protocol.decode_acks(payload)

    def close(self) -> None:
        self.sock.close()
