"""A peer holding the shared secret floods lmaster; nothing acknowledged is lost.

Real processes: carbon-cache, lmaster (secret, a 16 MiB spool, a 4 MiB
memory queue), an honest lagent with a journal, and a flooding peer sending
valid 1 MiB ``D`` frames of 2,000-character paths as fast as lmaster takes
them. carbon-cache is stopped for 10 s while the flood goes on (the
duration is the condition under test; everything else polls with a
deadline). lmaster must stop taking batches when its spool nears full
(back-pressure) instead of dropping what it acknowledged, so afterwards:

* every value the honest agent journaled is in whisper;
* lmaster's spool never dropped a record, and its memory stayed bounded;
* the flooder was acknowledged no more than the spool could hold while
  carbon was away (its throughput is bounded while lmaster is congested),
  and the honest agent caught up while the flood went on (fair turns).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from fructosa.wire import protocol
from fructosa.wire.blocks import Block
from tests.support.carbon import CarbonCache, free_ports
from tests.support.configs import agent_ini, master_ini
from tests.support.daemons import Daemon
from tests.support.journal import count_points, missing_points
from tests.support.peer import Peer, read_frame
from tests.support.waiting import wait_for, wait_for_log

SECRET = b"flood-test-secret-0123456789abcdef"
SPOOL_BYTES = 16 << 20
QUEUE_BYTES = 4 << 20
OUTAGE = 10.0
RSS_BOUND = 250 << 20
"""lmaster's resident memory stays below this however long the paths: the byte-bounded queue
and resend window (4 MiB each) and a few 1 MiB frames on top of the interpreter."""
DISTINCT_PATHS = 50
DATAPOINTS_PER_FRAME = 500


def flood_block() -> Block:
    """500 datapoints of 2,000-odd-character paths: a frame of about 1 MiB."""
    now = time.time()
    paths = [f"flooder.{index:02d}." + ".".join(["x" * 199] * 10) for index in range(DISTINCT_PATHS)]
    datapoints = [
        (paths[i % DISTINCT_PATHS], (now - i // DISTINCT_PATHS, float(i))) for i in range(DATAPOINTS_PER_FRAME)
    ]
    return Block.of(datapoints, samples=1)


class Flooder:
    """One authenticated connection sending valid ``D`` frames back to back; counts acknowledgements."""

    def __init__(self, port: int) -> None:
        self.peer = Peer(port, "flooder", SECRET)
        self.peer.sock.settimeout(None)  # a full socket buffer blocks the sender: that is the back-pressure
        block = flood_block()
        self.encoded = block.encode()
        self.datapoint_bytes = len(block.paths) / len(block) + 16
        self.acknowledged = 0
        """Datapoints lmaster acknowledged so far."""
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._read_acks, daemon=True),
        ]

    def start(self) -> Flooder:
        for thread in self.threads:
            thread.start()
        return self

    def _send(self) -> None:
        sequence = 0
        try:
            while not self.stopping.is_set():
                sequence += 1
                body = protocol.batch_id(self.peer.session, sequence) + self.encoded
                self.peer.sock.sendall(protocol.encode_frame(protocol.DATAPOINTS, body))
        except OSError:
            pass  # closed by stop()

    def _read_acks(self) -> None:
        try:
            while True:
                kind, payload = read_frame(self.peer.sock)
                if kind == protocol.ACK:
                    self.acknowledged += DATAPOINTS_PER_FRAME * len(protocol.decode_acks(payload))
        except (OSError, ConnectionError):
            pass

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.peer.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for thread in self.threads:
            thread.join(10)
        self.peer.close()


class PeakMemory:
    """The largest resident set of a process, sampled every 0.1 s in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stopping.wait(0.1):
            try:
                with open(f"/proc/{self.pid}/status") as status:
                    rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))
            except (OSError, StopIteration):
                continue
            self.peak = max(self.peak, rss)

    def stop(self) -> int:
        self.stopping.set()
        self.thread.join(5)
        return self.peak


def spool_bytes(directory: Path) -> int:
    total = 0
    for path in directory.glob("*.seg"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def missing_until(journal: Path, carbon: CarbonCache, until: float) -> dict[str, list[int]]:
    missing = missing_points([journal], carbon)
    missing = {metric: [second for second in seconds if second <= until] for metric, seconds in missing.items()}
    return {metric: seconds for metric, seconds in missing.items() if seconds}


def wait_until_stored(journal: Path, carbon: CarbonCache, until: float, timeout: float) -> None:
    wait_for(
        lambda: not missing_until(journal, carbon, until),
        timeout,
        "every value the honest agent journaled in whisper",
        interval=0.5,
        describe=lambda: {path: seconds[:5] for path, seconds in missing_until(journal, carbon, until).items()},
    )


@pytest.mark.timeout(240)
def test_a_flooding_peer_with_the_secret_cannot_make_lmaster_drop_acknowledged_data(tmp_path: Path) -> None:
    for sub in ("m", "a0"):
        (tmp_path / sub).mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    (port,) = free_ports(1)
    journal = tmp_path / "node00.journal"
    with CarbonCache(tmp_path / "carbon") as carbon:
        master_conf = tmp_path / "lmaster.conf"
        master_conf.write_text(
            master_ini(
                tmp_path, port, carbon.pickle_port, level="INFO",
                lmaster={"secret file": secret, "spool max size": "16M", "self metrics interval": 1},
                graphite={"max queued bytes": "4M", "max queued datapoints": 20000},
            )
        )  # fmt: skip
        agent_conf = tmp_path / "node00.conf"
        agent_conf.write_text(
            agent_ini(
                tmp_path, port, hostname="node00", lmaster={"secret file": secret},
                lagent={"journal file": journal},
                sensors={"VirtualMemory": {"time_interval": 1}, "CPUTimes": {"time_interval": 1}},
            )
        )  # fmt: skip
        with Daemon("lmaster", master_conf, tmp_path / "m").start(listen_port=port) as master:
            memory = PeakMemory(master.pid)
            with Daemon("lagent", agent_conf, tmp_path / "a0").start() as agent:
                carbon.wait_for("node00.VirtualMemory.percent", timeout=30)
                wait_until_stored(journal, carbon, time.time(), timeout=30)
                carbon.stop()  # carbon's cache is written: nothing the test did not send is lost with it
                flooder = Flooder(port).start()
                try:
                    outage_started = time.monotonic()
                    acknowledged_before = flooder.acknowledged
                    wait_for_log(tmp_path / "lmaster.log", "not taking agents' batches", timeout=OUTAGE)
                    time.sleep(max(0.0, OUTAGE - (time.monotonic() - outage_started)))  # the outage under test
                    acknowledged_in_outage = flooder.acknowledged - acknowledged_before
                    spooled = spool_bytes(tmp_path / "spool-lmaster")
                    carbon.start()
                    outage_end = time.time()
                    # the flood goes on: the honest agent still catches up (fair turns)
                    wait_until_stored(journal, carbon, outage_end, timeout=90)
                finally:
                    flooder.stop()
                agent.stop()
                wait_until_stored(journal, carbon, time.time(), timeout=60)
            peak_rss = memory.stop()
        log = (tmp_path / "lmaster.log").read_text()
    produced = count_points([journal])
    print(
        f"\nflood: honest agent {produced} values, all stored; flooder acknowledged {acknowledged_in_outage} datapoints"
        f" during the {OUTAGE:g} s outage (spool {spooled} bytes), {flooder.acknowledged} in all;"
        f" lmaster peak RSS {peak_rss >> 20} MiB"
    )
    assert produced > 10 * 20  # ~20 values a second for well over 10 s
    assert "dropped the oldest" not in log, "the spool dropped acknowledged records"
    assert spooled <= SPOOL_BYTES
    # while carbon was away the flooder got no more acknowledged than the spool holds (and one frame)
    assert acknowledged_in_outage * flooder.datapoint_bytes <= SPOOL_BYTES + protocol.MAX_FRAME
    assert acknowledged_in_outage > 0
    assert peak_rss < RSS_BOUND, f"lmaster peaked at {peak_rss >> 20} MiB"
    assert "taking agents' batches again" in log
