"""Hostile frames from a peer that holds the shared secret, against a real lmaster.

Anyone with root on one compute node can read the secret file, so
authentication does not make a peer honest. Each test sends one kind of frame
such a peer could write in a few lines and holds lmaster to a stated bound:
memory, CPU time, a refused hello, an honest statistic. After each, an
honest peer's datapoints must still reach the real carbon-cache's whisper
files promptly, so "refused" never means "lmaster stopped working".
"""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fructosa.wire import protocol
from fructosa.wire.blocks import Block
from tests.support.carbon import CarbonCache, free_ports
from tests.support.daemons import Daemon
from tests.support.peer import Peer, closed_by_peer, handshake, hello_frame, read_frame

SECRET = b"hostile-frames-secret-0123456789abcdef"
MAX_MEMORY_GROWTH = 48 << 20
"""Bytes lmaster's peak resident memory may grow by for one memo-bomb frame
(before the per-frame budget it grew by 760-800 MB for a 30 KB frame)."""
MAX_COLLISION_CPU_SECONDS = 3.0
"""CPU seconds lmaster may spend on a 1 MiB frame of colliding integer keys
(before: 33-35 s; now the first such key ends the decoding)."""
MAX_HONEST_DELAY = 3.0
"""Seconds an honest peer's handshake and acknowledgement may take while a
hostile frame is being dealt with."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Master:
    port: int
    daemon: Daemon
    carbon: CarbonCache
    log: Path
    status: Path
    honest_value: int = 0
    sources: int = 0

    def connect(self) -> tuple[socket.socket, str]:
        """A connection from a loopback address of its own, and that address: lmaster
        logs one refusal per address and kind, so each test's refusal gets its line."""
        self.sources += 1
        source = f"127.0.0.{10 + self.sources}"
        return socket.create_connection(("127.0.0.1", self.port), timeout=10, source_address=(source, 0)), source

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Master]:
    """One lmaster (secret, real carbon-cache) shared by the tests of this module."""
    workdir = tmp_path_factory.mktemp("hostile")
    with CarbonCache(workdir / "carbon") as carbon:
        (port,) = free_ports(1)
        secret = workdir / "secret"
        secret.write_bytes(SECRET)
        secret.chmod(0o600)
        conf = workdir / "lmaster.conf"
        log = workdir / "lmaster.log"
        conf.write_text(
            f"[lmaster]\nhost = 127.0.0.1\nincoming data port = {port}\npeer timeout = 2\n"
            f"self metrics interval = 1\nspool dir = {workdir / 'spool'}\nsecret file = {secret}\n\n"
            f"[Graphite]\nhost = 127.0.0.1\ncarbon receiver pickle port = {carbon.pickle_port}\n\n"
            f"[logging]\nfilename = {log}\nlevel = INFO\n"
        )
        run = workdir / "run"
        with Daemon("lmaster", conf, run) as daemon:
            daemon.start(listen_port=port)
            site = Master(port, daemon, carbon, log, run / "lmaster.status.json")
            honest_delivers(site)  # warm up: executor thread, carbon link, first whisper file
            yield site
            assert "Traceback" not in daemon.output(), daemon.output()[-3000:]


def honest_delivers(master: Master) -> float:
    """An honest peer connects, sends one sample and sees it acknowledged and
    in whisper; returns the seconds from connect to acknowledgement."""
    assert master.daemon.running, "lmaster died"
    master.honest_value += 1
    value = master.honest_value
    started = time.monotonic()
    peer = Peer(master.port, "honest", SECRET)
    try:
        batch = peer.send([{"host": "honest", "sensor": "After", "time": time.time(), "value": {"n": value}}])
        while batch not in peer.read_acks():
            pass
    finally:
        peer.close()
    elapsed = time.monotonic() - started
    master.carbon.wait_for("honest.After.n", lambda points: any(v == value for _, v in points), timeout=15)
    return elapsed


def hostile_connection(master: Master, host: str = "mallory") -> tuple[socket.socket, str]:
    sock, source = master.connect()
    welcome = handshake(sock, host, SECRET)
    assert "error" not in welcome, welcome
    return sock, source


def s_frame(pickled: bytes) -> bytes:
    return protocol.encode_frame(protocol.SAMPLES, os.urandom(24) + pickled)


def peak_memory(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, flags=re.MULTILINE).group(1)) * 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the whole process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat


def wait_for_log(master: Master, pattern: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, master.log_text()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line matching {pattern!r}:\n{master.log_text()[-3000:]}")
        time.sleep(0.1)


# -- frames ------------------------------------------------------------------------


def memo_bomb(references: int, leaves: int = 9_999) -> bytes:
    """A list of ``references`` memo references to one sample of ``leaves`` leaves."""
    sample = {"host": "mallory", "sensor": "Bomb", "time": time.time(), "value": [1] * leaves}
    return pickle.dumps([sample] * references, protocol=2)


def many_large_samples() -> bytes:
    """Just under 1 MiB of distinct samples of 9,999 leaves each, no shared references:
    every sample passes the per-sample bound, the frame does not pass the per-frame one."""
    samples = [
        {"host": "mallory", "sensor": f"Big{index}", "time": time.time(), "value": [1] * 9_999} for index in range(50)
    ]
    return pickle.dumps(samples, protocol=2)


def colliding_integer_keys(count: int) -> bytes:
    """One sample whose value is a dict of ``count`` integer keys k·(2**61 − 1), which all
    hash alike: inserting them is quadratic (the pickle is written by hand, since building
    that dict here would cost this process the same half a minute)."""
    marker = "VALUE-PLACEHOLDER"
    pickled = pickle.dumps([{"host": "mallory", "sensor": "Hash", "time": time.time(), "value": marker}], protocol=2)
    raw_marker = b"X" + len(marker).to_bytes(4, "little") + marker.encode()
    items = b"".join(
        b"\x8a" + bytes([len(key)]) + key + b"K\x01"
        for key in (pickle.encode_long(k * (2**61 - 1)) for k in range(1, count + 1))
    )
    return pickled.replace(raw_marker, b"}(" + items + b"u")


# -- tests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pickled"),
    [
        ("30 KB, 200 references", memo_bomb(200)),
        ("64 KiB, 20,000 references", memo_bomb(20_000)),
        ("1 MiB of distinct 10,000-leaf samples", many_large_samples()),
    ],
    ids=lambda value: value if isinstance(value, str) else "frame",  # the frames hold time.time(): ids differ per run
)
def test_a_frame_expanding_to_millions_of_datapoints_is_refused_small(
    master: Master, name: str, pickled: bytes
) -> None:
    frame = s_frame(pickled)
    assert len(frame) <= protocol.MAX_FRAME
    before = peak_memory(master.daemon.pid)
    sock, source = hostile_connection(master)
    with sock:
        sock.sendall(frame)
        assert closed_by_peer(sock, 10), f"{name}: the connection is still open"
    wait_for_log(master, rf"disconnected {re.escape(source)}:\d+: .*more than 200000 values in one frame")
    growth = peak_memory(master.daemon.pid) - before
    assert growth < MAX_MEMORY_GROWTH, f"{name}: lmaster's peak memory grew by {growth >> 20} MiB"
    assert honest_delivers(master) < MAX_HONEST_DELAY
    assert not list((master.carbon.data_dir / "mallory").glob("Bo*")), "datapoints of the bomb were stored"


def test_colliding_integer_keys_cost_no_cpu_and_hold_up_no_one(master: Master) -> None:
    frame = s_frame(colliding_integer_keys(70_000))
    assert len(frame) > 800_000
    before = cpu_seconds(master.daemon.pid)
    sock, source = hostile_connection(master)
    with sock:
        sock.sendall(frame)
        honest_delay = honest_delivers(master)  # while lmaster deals with the hostile frame
        assert closed_by_peer(sock, 10), "the connection is still open"
    wait_for_log(master, rf"disconnected {re.escape(source)}:\d+: .*dict key is a int \d+")
    spent = cpu_seconds(master.daemon.pid) - before
    assert spent < MAX_COLLISION_CPU_SECONDS, f"lmaster spent {spent:.1f} s of CPU on one frame"
    assert honest_delay < MAX_HONEST_DELAY, f"an honest peer waited {honest_delay:.1f} s"


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("good!", "is not a Graphite path component"),
        ("good.evil.example", "is not a Graphite path component"),
        ("_good", "is not a Graphite path component"),
        ("fructosa", "is reserved"),
        ("Carbon", "is reserved"),
        ("x" * 201, "is not a Graphite path component"),
    ],
)
def test_hello_names_that_are_not_a_clean_component_are_refused(master: Master, host: str, reason: str) -> None:
    sock, source = master.connect()
    with sock:
        kind, payload = read_frame(sock)
        assert kind == protocol.CHALLENGE
        sock.sendall(hello_frame(host, protocol.decode_json(payload), SECRET))
        assert closed_by_peer(sock, 10), f"hello from {host!r} accepted"
    wait_for_log(
        master, rf"disconnected {re.escape(source)}:\d+: bad hello: host {re.escape(repr(host[:40]))}.* {reason}"
    )
    honest_delivers(master)
    assert not (master.carbon.data_dir / "good").exists(), "a refused hello's name appears in carbon"


def test_a_hello_over_4_kib_is_refused(master: Master) -> None:
    sock, source = master.connect()
    with sock:
        kind, payload = read_frame(sock)
        challenge = protocol.decode_json(payload)
        hello = {"protocol": "fructosa", "version": 1, "host": "padded", "nonce": "00", "padding": "x" * 5000}
        assert challenge["auth"]
        sock.sendall(protocol.encode_json(protocol.HELLO, hello))
        assert closed_by_peer(sock, 10), "an oversized hello was accepted"
    wait_for_log(
        master, rf"disconnected {re.escape(source)}:\d+: bad hello: hello of \d+ bytes \(at most {protocol.MAX_HELLO}\)"
    )
    honest_delivers(master)


def status_counts(master: Master) -> tuple[int, int]:
    """(samples, datapoints) lmaster has taken, from its status file's report."""
    report = json.loads(master.status.read_text())["report"]
    samples = re.search(r"(\d+) samples", report)
    datapoints = re.search(r"(\d+) datapoints", report)
    assert samples and datapoints, report
    return int(samples.group(1)), int(datapoints.group(1))


def test_a_datapoint_block_cannot_claim_billions_of_samples(master: Master) -> None:
    now = time.time()
    block = Block.of([(f"liar.Claim.n{index}", (now, float(index))) for index in range(3)], samples=2**32 - 1)
    sock, _ = hostile_connection(master, "liar")
    with sock:
        batch = protocol.batch_id(os.urandom(16), 1)
        sock.sendall(protocol.encode_frame(protocol.DATAPOINTS, batch + block.encode()))
        kind, payload = read_frame(sock)
        assert kind == protocol.ACK and batch in protocol.decode_acks(payload)
    master.carbon.wait_for("liar.Claim.n2", timeout=15)
    deadline = time.monotonic() + 10
    while True:  # the status file is rewritten every second
        samples, datapoints = status_counts(master) if master.status.exists() else (0, 0)
        if datapoints >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert datapoints >= 3, "the status file never counted the block"
    assert samples <= datapoints, f"{samples} samples counted for {datapoints} datapoints"
