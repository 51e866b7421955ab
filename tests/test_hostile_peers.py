"""Hostile peers against a real lmaster while an honest agent keeps delivering.

Every attack must end with the attacker disconnected and logged with its
address, no code executed, lmaster alive, and the honest agent's samples
still landing in the real carbon-cache's whisper files.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.carbon import CarbonCache, free_ports
from tests.support.configs import master_ini
from tests.support.daemons import Daemon
from tests.support.peer import Peer, closed_by_peer, hello_frame


class HonestAgent(threading.Thread):
    """Speaks the real protocol: one sample of ``honest.Seq.n`` every 0.1 s."""

    def __init__(self, port: int, secret: bytes | None = None) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.secret = secret
        self.stop_event = threading.Event()
        self.sent = 0
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            peer = Peer(self.port, "honest", self.secret)
            while not self.stop_event.is_set():
                self.sent += 1
                peer.send([{"host": "honest", "sensor": "Seq", "time": time.time(), "value": {"n": self.sent}}])
                self.stop_event.wait(0.1)
            peer.close()
        except Exception as error:  # reported by the test
            self.error = error


class Evil:
    """A pickle that would create a file when unpickled with plain pickle.loads."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (open, (str(self.target), "w"))


@pytest.fixture
def master(tmp_path: Path, carbon: CarbonCache) -> Iterator[tuple[int, Path]]:
    (port,) = free_ports(1)
    log = tmp_path / "lmaster.log"
    conf = tmp_path / "lmaster.conf"
    options = {"peer timeout": 2, "idle timeout": 3, "max connections": 6}
    conf.write_text(master_ini(tmp_path, port, carbon.pickle_port, log=log, level="INFO", lmaster=options))
    with Daemon("lmaster", conf, tmp_path).start(listen_port=port) as daemon:
        yield port, log
        assert daemon.running, "lmaster died"


def attack_with(port: int, payload: bytes, after_hello: bool) -> socket.socket:
    if after_hello:
        sock = Peer(port, "mallory").sock
    else:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(payload)
    return sock


def frame(kind: bytes, body: bytes) -> bytes:
    return struct.pack("!I", len(body) + 1) + kind + body


BATCH_ID = bytes(24)

ATTACKS = {
    "reduce payload as samples": lambda target: (
        frame(b"S", BATCH_ID + pickle.dumps([Evil(target)], protocol=2)),
        True,
    ),
    "reduce payload as hello": lambda target: (frame(b"H", pickle.dumps(Evil(target))), False),
    "oversized length prefix": lambda target: (struct.pack("!I", 0xFFFFFFF0) + b"S" + b"x" * 100, True),
    "random bytes": lambda target: (os.urandom(4096), False),
    "random bytes after hello": lambda target: (b"\x00\x00\x10\x00S" + os.urandom(4095), True),
    "unknown frame kind": lambda target: (frame(b"Z", b"hi"), True),
    "samples that are not a list": lambda target: (frame(b"S", BATCH_ID + pickle.dumps({"a": 1})), True),
    "samples frame without batch id": lambda target: (frame(b"S", b"short"), True),
    "acknowledgement from an agent": lambda target: (frame(b"A", BATCH_ID), True),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_is_refused_while_honest_agent_delivers(
    attack: str, master: tuple[int, Path], carbon: CarbonCache, tmp_path: Path
) -> None:
    port, log = master
    target = tmp_path / "pwned"
    honest = HonestAgent(port)
    honest.start()
    carbon.wait_for("honest.Seq.n")
    payload, after_hello = ATTACKS[attack](target)
    attacker = attack_with(port, payload, after_hello)
    address = f"127.0.0.1:{attacker.getsockname()[1]}"
    try:
        assert closed_by_peer(attacker, timeout=5), "attacker still connected"
    finally:
        attacker.close()
    attacked_at = int(time.time())
    carbon.wait_for("honest.Seq.n", lambda points: points[-1][0] > attacked_at, timeout=10)
    honest.stop_event.set()
    honest.join()
    assert honest.error is None, f"honest agent disturbed: {honest.error!r}"
    assert not target.exists(), "the pickle executed code"
    assert f"disconnected {address}" in log.read_text()


def test_slow_loris_is_cut_off_while_honest_agent_delivers(master: tuple[int, Path], carbon: CarbonCache) -> None:
    port, log = master
    honest = HonestAgent(port)
    honest.start()
    hello = hello_frame("slow", {"nonce": "00"})
    loris = socket.create_connection(("127.0.0.1", port), timeout=5)
    started = time.monotonic()
    try:
        for byte in hello[:6]:  # one byte per 0.5 s: never a complete hello
            loris.sendall(bytes([byte]))
            if closed_by_peer(loris, timeout=0.5):
                break
        else:
            assert closed_by_peer(loris, timeout=5), "slow loris still connected"
    finally:
        loris.close()
    assert time.monotonic() - started < 6
    carbon.wait_for("honest.Seq.n", lambda points: len(points) >= 3)
    honest.stop_event.set()
    honest.join()
    assert honest.error is None
    assert "no hello within 2 s" in log.read_text()


def test_malformed_samples_are_skipped_and_good_ones_kept(master: tuple[int, Path], carbon: CarbonCache) -> None:
    """A frame mixing garbage and real samples: the real ones land, the rest is logged."""
    port, log = master
    now = time.time()
    samples = [
        "not a dict",
        {"host": "mixed", "sensor": "Deep", "time": now, "value": [[[[[[[[[[1]]]]]]]]]]},
        {"host": "mixed", "sensor": "Good", "time": now, "value": {"x": 42}},
        {"host": "mixed", "time": now},
    ]
    peer = Peer(port, "mixed")
    batch = peer.send(samples)
    assert peer.read_acks() == [batch]
    assert carbon.wait_for("mixed.Good.x")[-1][1] == 42
    assert not closed_by_peer(peer.sock, timeout=0.5)
    peer.close()
    text = log.read_text()
    assert "malformed sample" in text and "not a dict" in text
    assert not (carbon.data_dir / "mixed" / "Deep").exists()


def test_idle_agents_are_dropped_and_connections_are_capped(master: tuple[int, Path]) -> None:
    port, log = master
    quiet = Peer(port, "quiet")
    assert closed_by_peer(quiet.sock, timeout=6), "a silent agent is kept forever"
    assert "agent quiet silent for 3 s" in log.read_text()
    crowd = [Peer(port, f"crowd{index}") for index in range(6)]  # max connections counts authenticated ones
    try:
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert closed_by_peer(extra, timeout=2)
        assert "too many connections (max connections = 6)" in log.read_text()
    finally:
        for peer in crowd:
            peer.close()
