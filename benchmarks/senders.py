"""Load generators: simulated agents speaking the real agent protocol, and
carbon pickle / plaintext blasters for the peers, in their own processes.

Every sender process is pinned to the load core and drives its connections
from one non-blocking selector loop with pre-built bytes, so sending costs
little more than the kernel's copy.

* ``fructosa``: the agent protocol (challenge, hello, welcome, then ``D``
  frames of 100 samples × 5 values = 500 datapoints, flattened as lagent
  does). Like lagent it keeps at most ``window`` (32) batches unacknowledged per connection and reads the
  ``A`` frames as they come, so lmaster runs with its delivery guarantee on:
  it acknowledges a batch only once it is written to carbon's socket.
* ``samples``: the same protocol and window, but ``S`` frames (the 100
  samples pickled, as a simple third-party sender writes them): lmaster
  unpickles and flattens them itself.
* ``pickle``: carbon's pickle protocol, the same 500 datapoints per frame.
* ``line``: carbon's plaintext protocol, the same datapoints as lines.

The peers' protocols have no acknowledgement: those senders write as fast as
TCP lets them, and what a relay drops shows up as loss at the sink.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import selectors
import socket
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from fructosa.wire import protocol
from fructosa.wire.blocks import Block
from tests.support.peer import handshake

from .measure import LOAD_CPU, pin_self

SAMPLES_PER_FRAME = 100
VALUES_PER_SAMPLE = 5
DATAPOINTS_PER_FRAME = SAMPLES_PER_FRAME * VALUES_PER_SAMPLE
WINDOW = 32
"""Unacknowledged batches per connection, as lagent (MAX_UNACKNOWLEDGED)."""
BLAST_FRAMES = 20
"""Frames per write for the peers' protocols (10,000 datapoints)."""
_HEADER = struct.Struct("!I")
_SENT, _ACKED, _READY, _DONE, _FAILED = range(5)
_SLOTS = 5


def host_name(connection: int) -> str:
    return f"bench{connection}"


def samples(host: str, timestamp: float) -> list[dict]:
    """One agent batch: 100 samples (sensors ``Bench0``…) of 5 values each."""
    return [
        {
            "host": host,
            "sensor": f"Bench{k}",
            "time": timestamp,
            "value": {f"f{j}": 1000.0 + k + j / 8 for j in range(VALUES_PER_SAMPLE)},
        }
        for k in range(SAMPLES_PER_FRAME)
    ]


def datapoints(host: str, timestamp: float) -> list[tuple[str, tuple[float, float]]]:
    """The datapoints lmaster makes of :func:`samples` (``host.BenchK.fJ``)."""
    return [
        (f"{sample['host']}.{sample['sensor']}.{key}", (timestamp, value))
        for sample in samples(host, timestamp)
        for key, value in sample["value"].items()
    ]


@functools.lru_cache(maxsize=4096)
def _unstamped_block(host: str) -> Block:
    return Block.of(datapoints(host, 0.0), samples=SAMPLES_PER_FRAME)


def agent_block(host: str, timestamp: float) -> bytes:
    """What lagent sends for :func:`samples`: a ``D`` payload (flattened on the agent).
    Built once per host and stamped per call (the values do not depend on the time),
    so a sender that stamps every batch anew costs little more than one that does not."""
    block = _unstamped_block(host)
    return Block(block.paths, array("d", [timestamp]) * len(block), block.values, block.samples).encode()


def samples_payload(host: str, timestamp: float) -> bytes:
    """What a simple sender sends for :func:`samples`: an ``S`` payload (lmaster flattens it)."""
    return pickle.dumps(samples(host, timestamp), protocol=pickle.HIGHEST_PROTOCOL)


def pickle_frame(host: str, timestamp: float) -> bytes:
    body = pickle.dumps(datapoints(host, timestamp), protocol=2)
    return struct.pack("!L", len(body)) + body


def line_block(host: str, timestamp: float) -> bytes:
    return "".join(f"{path} {value!r} {int(when)}\n" for path, (when, value) in datapoints(host, timestamp)).encode()


class _Connection:
    """One connection of a sender loop: an outgoing buffer and its frame ends."""

    reads = False

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.out = memoryview(b"")
        self.position = 0
        self.ends: list[int] = []  # offsets where the buffer's frames end
        self.started_frames = 0  # frames put into buffers
        self.sent_frames = 0  # frames completely written
        self.acked_frames = 0

    @property
    def pending(self) -> bool:
        return self.position < len(self.out)

    def fill(self) -> None:
        raise NotImplementedError

    def set_buffer(self, data: bytes, ends: list[int]) -> None:
        self.out, self.position, self.ends = memoryview(data), 0, ends
        self.started_frames += len(ends)

    def writable(self) -> None:
        try:
            self.position += self.sock.send(self.out[self.position :])
        except (BlockingIOError, InterruptedError):
            return
        if not self.pending:
            self.sent_frames += len(self.ends)
            self.ends = []

    def frames_in_partial_buffer(self) -> int:
        return sum(1 for end in self.ends if end <= self.position)

    def readable(self) -> None:
        pass

    @property
    def outstanding(self) -> int:
        return 0


class AgentConnection(_Connection):
    """The agent protocol with lagent's window of unacknowledged batches."""

    reads = True

    def __init__(
        self, port: int, host: str, make_payload: Callable[[int], bytes], kind: bytes = protocol.DATAPOINTS,
        window: int = WINDOW,
    ) -> None:  # fmt: skip
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        welcome = handshake(sock, host)
        if "error" in welcome:
            raise ConnectionError(f"lmaster refused {host}: {welcome['error']}")
        super().__init__(sock)
        self.make_payload = make_payload
        self.kind = kind
        self.window = window
        self.session = os.urandom(16)
        self.sequence = 0
        self.inbox = bytearray()

    @property
    def outstanding(self) -> int:
        """Batches written (or being written) and not acknowledged yet."""
        return self.sequence - self.acked_frames

    def fill(self) -> None:
        room = self.window - self.outstanding
        if self.pending or room <= 0:
            return
        frames, ends, size = [], [], 0
        for _ in range(room):
            self.sequence += 1
            payload = self.make_payload(self.sequence)
            frame = b"".join(
                (_HEADER.pack(1 + protocol.BATCH_ID_SIZE + len(payload)), self.kind, self.session,
                 self.sequence.to_bytes(8, "big"), payload)
            )  # fmt: skip
            frames.append(frame)
            size += len(frame)
            ends.append(size)
        self.set_buffer(b"".join(frames), ends)

    def readable(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            raise ConnectionError("closed by lmaster")
        inbox = self.inbox
        inbox += data
        position = 0
        while len(inbox) - position >= 4:
            (length,) = _HEADER.unpack_from(inbox, position)
            if len(inbox) - position - 4 < length:
                break
            if inbox[position + 4 : position + 5] != protocol.ACK:
                raise ConnectionError(f"unexpected frame {bytes(inbox[position + 4 : position + 5])!r}")
            self.acked_frames += (length - 1) // protocol.BATCH_ID_SIZE
            position += 4 + length
        del inbox[:position]


class BlastConnection(_Connection):
    """The same pre-built block of frames (or lines), written again and again."""

    def __init__(self, port: int, block: bytes, frames: int) -> None:
        super().__init__(socket.create_connection(("127.0.0.1", port), timeout=10))
        self.block = block
        self.block_ends = [len(block) * (i + 1) // frames for i in range(frames)]

    def fill(self) -> None:
        if not self.pending:
            self.set_buffer(self.block, self.block_ends)


AGENT_KINDS: dict[str, tuple[Callable[[str, float], bytes], bytes]] = {
    "fructosa": (agent_block, protocol.DATAPOINTS),
    "samples": (samples_payload, protocol.SAMPLES),
}
"""The sender kinds that speak the agent protocol: their payload and frame kind."""


@dataclass
class SenderSpec:
    """What one sender process runs: ``kind`` and its connections."""

    kind: str  # "fructosa" (D frames), "samples" (S frames), "pickle" or "line"
    port: int
    first_connection: int
    connections: int
    rate: float = 0.0
    """Datapoints/s this process offers in total (0: as fast as TCP takes them)."""
    timestamp: float = field(default_factory=lambda: float(int(time.time())))
    distinct_timestamps: bool = False
    """fructosa only: batch N of a connection is stamped ``timestamp + N`` (whisper
    keeps one point per path and second, so end-to-end counting needs this)."""
    max_sequence: int = 0
    """fructosa only, with distinct timestamps: stop after this many batches."""


def _connections(spec: SenderSpec) -> list[_Connection]:
    result: list[_Connection] = []
    for number in range(spec.first_connection, spec.first_connection + spec.connections):
        host = host_name(number)
        if spec.kind in AGENT_KINDS:
            encode, kind = AGENT_KINDS[spec.kind]
            if spec.distinct_timestamps:

                def make_payload(sequence: int, host: str = host, encode: Callable = encode) -> bytes:
                    return encode(host, spec.timestamp + sequence)

            else:
                constant = encode(host, spec.timestamp)

                def make_payload(sequence: int, constant: bytes = constant) -> bytes:
                    return constant

            result.append(AgentConnection(spec.port, host, make_payload, kind))
        else:
            frames = 1 if spec.rate else BLAST_FRAMES  # paced: one frame per write
            encode = pickle_frame if spec.kind == "pickle" else line_block
            result.append(BlastConnection(spec.port, encode(host, spec.timestamp) * frames, frames))
    return result


def _sender_main(spec: SenderSpec, counters: list, slot: int, go: object, stop: object, cpus: set[int]) -> None:
    """One sender process: connect, wait for ``go``, send until ``stop``, then
    finish the buffers and (agent protocol) wait up to 15 s for acknowledgements."""
    pin_self(cpus)
    base = slot * _SLOTS
    try:
        connections = _connections(spec)
    except Exception:
        counters[base + _FAILED] = 1
        raise
    counters[base + _READY] = 1
    go.wait()  # type: ignore[attr-defined]
    selector = selectors.DefaultSelector()
    interest: dict[_Connection, int] = {}
    stopping_since = 0.0
    began = time.monotonic()
    per_frame = DATAPOINTS_PER_FRAME / spec.rate if spec.rate else 0.0
    try:
        while True:
            now = time.monotonic()
            if not stopping_since and stop.is_set():  # type: ignore[attr-defined]
                stopping_since = now
            allowed = int((now - began) / per_frame) - sum(c.started_frames for c in connections) if per_frame else 1
            for connection in connections:
                if (
                    allowed > 0
                    and not stopping_since
                    and not (spec.max_sequence and getattr(connection, "sequence", 0) >= spec.max_sequence)
                ):
                    before = connection.started_frames
                    connection.fill()
                    if per_frame:
                        allowed -= connection.started_frames - before
                wanted = (selectors.EVENT_READ if connection.reads else 0) | (
                    selectors.EVENT_WRITE if connection.pending else 0
                )
                if wanted != interest.get(connection, 0):
                    if connection in interest:
                        selector.unregister(connection.sock)
                        del interest[connection]
                    if wanted:
                        selector.register(connection.sock, wanted, connection)
                        interest[connection] = wanted
            for key, mask in selector.select(min(0.05, per_frame) if per_frame else 0.05) if interest else ():
                connection = key.data
                if mask & selectors.EVENT_READ:
                    connection.readable()
                if mask & selectors.EVENT_WRITE:
                    connection.writable()
            counters[base + _SENT] = DATAPOINTS_PER_FRAME * sum(c.sent_frames for c in connections)
            counters[base + _ACKED] = DATAPOINTS_PER_FRAME * sum(c.acked_frames for c in connections)
            if stopping_since:
                busy = any(c.pending for c in connections)
                waiting = any(c.outstanding for c in connections)
                if not (busy or waiting) or now - stopping_since > 15:
                    break
            elif not interest:
                time.sleep(min(0.01, per_frame) if per_frame else 0.01)
    finally:
        partial = sum(c.frames_in_partial_buffer() for c in connections if c.pending)
        counters[base + _SENT] = DATAPOINTS_PER_FRAME * (sum(c.sent_frames for c in connections) + partial)
        counters[base + _DONE] = 1
        for connection in connections:
            connection.sock.close()


class Senders:
    """Sender processes, started together; ``sent``/``acked`` are live totals."""

    def __init__(self, specs: list[SenderSpec], cpus: set[int] = LOAD_CPU) -> None:
        self.counters = multiprocessing.RawArray("d", _SLOTS * len(specs))
        self.go = multiprocessing.Event()
        self.stop_event = multiprocessing.Event()
        self.processes = [
            multiprocessing.Process(
                target=_sender_main,
                args=(spec, self.counters, slot, self.go, self.stop_event, cpus),
                daemon=True,
                name=f"sender-{slot}",
            )  # fmt: skip
            for slot, spec in enumerate(specs)
        ]
        for process in self.processes:
            process.start()

    def _sum(self, field_index: int) -> int:
        return int(sum(self.counters[i * _SLOTS + field_index] for i in range(len(self.processes))))

    @property
    def sent(self) -> int:
        return self._sum(_SENT)

    @property
    def acked(self) -> int:
        return self._sum(_ACKED)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes if process.pid is not None]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self._sum(_READY) < len(self.processes):
            if self._sum(_FAILED) or not all(p.is_alive() for p in self.processes) or time.monotonic() > deadline:
                self.terminate()
                raise RuntimeError("a sender could not connect")
            time.sleep(0.05)

    def start(self) -> None:
        self.go.set()

    def finish(self, timeout: float = 30.0) -> None:
        """Stop sending, let the processes finish their buffers and acknowledgements."""
        self.go.set()
        self.stop_event.set()
        for process in self.processes:
            process.join(timeout)
        self.terminate()

    def terminate(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()  # our own child, by its PID
                process.join(5)
