"""Thousands of malformed frames against a real lmaster while an honest agent delivers.

A seeded generator (``FRUCTOSA_FUZZ_SEED`` to replay another run) builds
frames of many families: random bytes, truncated frames, absurd length
prefixes, unknown kinds, hostile hellos, pickles that would run code
(GLOBAL, STACK_GLOBAL, REDUCE, INST, OBJ, NEWOBJ, BUILD, EXT, PERSID),
deep nesting, self-referencing memos and valid pickles of the wrong shape.
They go over hundreds of connections, before and after a valid handshake.
lmaster must stay up, never run a payload, keep acknowledging the honest
agent promptly, and keep its series in the real carbon-cache gap-free.

Inputs that broke lmaster at commit 7ae612b (a segfault, event-loop
freezes, a memory bomb, unlogged tracebacks) are listed in
:data:`KNOWN_BREAKERS` with the bug each exposed; each has its own
regression test. The big run keeps the memory bombs out (see
:func:`memo_bomb`) so that a regression cannot take the CI machine down.

The in-process hypothesis tests check the decoding functions directly:
anything at all must end in ProtocolError/SampleError or valid datapoints.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pickle
import pickletools
import random
import re
import socket
import struct
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fructosa.graphite_paths import SampleError, is_valid_path, sample_to_datapoints
from fructosa.master import heartbeat_backlog
from fructosa.wire import protocol
from tests.support.carbon import CarbonCache, free_ports
from tests.support.configs import master_ini
from tests.support.daemons import Daemon
from tests.support.peer import Peer, closed_by_peer, handshake, read_frame
from tests.support.waiting import wait_for

SECRET = b"fuzzing-secret-0123456789abcdef"
SEED = int(os.environ.get("FRUCTOSA_FUZZ_SEED", "20240611"))
MIN_FRAMES = 3000
WORKERS = 8
PEER_TIMEOUT = 1.0
MAX_ACK_LATENCY = 1.5
"""Seconds: the honest agent's batches are acknowledged this fast, fuzz or not
(typically 0.2 s: lmaster decodes large frames off its event loop; the worst
1 MiB frame takes it about 0.8 s)."""
MAX_MASTER_MEMORY = 512 << 20
"""Peak resident memory of lmaster (bytes) through the fuzz run."""
MEMO_INDEX_LIMIT = 1 << 20


# -- raw pickle building blocks -------------------------------------------------


def unicode(text: str | bytes) -> bytes:
    """BINUNICODE: a str on the unpickler's stack."""
    data = text.encode() if isinstance(text, str) else text
    return b"X" + struct.pack("<I", len(data)) + data


def short_unicode(text: str | bytes) -> bytes:
    """SHORT_BINUNICODE (protocol 4)."""
    data = text.encode() if isinstance(text, str) else text
    return b"\x8c" + bytes([len(data)]) + data


def sample_with_raw_value(raw_value: bytes, proto: int = 2) -> bytes:
    """A list holding one sample dict whose "value" is the given opcodes."""
    head = b"\x80" + bytes([proto]) + b"]}"
    fields = unicode("host") + unicode("fuzz") + unicode("sensor") + unicode("Raw")
    fields += unicode("time") + b"G" + struct.pack(">d", time.time())
    return head + b"(" + fields + unicode("value") + raw_value + b"ua."


def code_running_pickles(marker: Path) -> dict[str, bytes]:
    """Pickles that create ``marker`` when loaded by plain ``pickle.loads``
    (checked by test_the_code_running_pickles_are_live): a global reached by
    each opcode that can name one, called by each opcode that can call."""
    path = str(marker)
    shell = f"touch {path}"
    opener = unicode(path) + unicode("w")
    return {
        "GLOBAL+REDUCE open": b"\x80\x02]cbuiltins\nopen\n(" + opener + b"tRa.",
        "GLOBAL+REDUCE os.system": b"\x80\x02]cos\nsystem\n(" + unicode(shell) + b"tRa.",
        "GLOBAL+REDUCE posix.system": b"\x80\x02]cposix\nsystem\n" + unicode(shell) + b"\x85Ra.",
        "GLOBAL exec": b"\x80\x02]cbuiltins\nexec\n" + unicode(f"open({path!r}, 'w')") + b"\x85Ra.",
        "protocol 0 GLOBAL eval": b"c__builtin__\neval\n(" + unicode(f"open({path!r}, 'w')") + b"tR.",
        "STACK_GLOBAL+REDUCE": b"\x80\x04]" + short_unicode("builtins") + short_unicode("open") + b"\x93"
        + short_unicode(path) + short_unicode("w") + b"\x86Ra.",
        "INST": b"\x80\x02](" + opener + b"ibuiltins\nopen\na.",
        "OBJ": b"\x80\x02](cbuiltins\nopen\n" + opener + b"oa.",
        "in a sample value": sample_with_raw_value(b"cbuiltins\nopen\n(" + opener + b"tR"),
    }  # fmt: skip


def class_reaching_pickles(marker: Path) -> dict[str, bytes]:
    """The other opcodes that need a class, an extension code or a persistent id."""
    path = str(marker)
    return {
        "NEWOBJ": b"\x80\x02]cpathlib\nPath\n" + unicode(path) + b"\x85\x81a.",
        "NEWOBJ_EX": b"\x80\x04]cpathlib\nPath\n" + unicode(path) + b"\x85}\x92a.",
        "BUILD on a global": b"\x80\x02]cos\nenviron\n}ba.",
        "BUILD on a list": b"\x80\x02]]}ba.",
        "EXT1": b"\x80\x02]\x82\x01a.",
        "EXT2": b"\x80\x02]\x83\x00\x01a.",
        "EXT4": b"\x80\x02]\x84\x00\x00\x01\x00a.",
        "PERSID": b"\x80\x02]P" + path.encode() + b"\na.",
        "BINPERSID": b"\x80\x02]" + unicode(path) + b"Qa.",
        "REDUCE on plain data": b"\x80\x02]]" + unicode(path) + b"\x85Ra.",
        "OBJ of plain data": b"\x80\x02](]" + unicode(path) + b"oa.",
    }


def memo_bomb(pickled: bytes) -> bool:
    """Whether the opcodes an unpickler would run store at a huge memo index.

    The C unpickler grows its memo table to twice the index and zero-fills it:
    ``r\xff\xff\xff\x7f`` asks for 32 GiB. lmaster no longer uses it, but a
    regression must fail a test (see :data:`KNOWN_BREAKERS`), not exhaust the
    CI machine's memory: random pickles carrying one are drawn again.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # genops decoding odd STRING arguments
        try:
            for opcode, arg, _ in pickletools.genops(pickled):
                if opcode.name in ("PUT", "LONG_BINPUT") and int(arg) > MEMO_INDEX_LIMIT:
                    return True
        except Exception:  # genops stops where the unpickler fails too
            pass
    return False


def peak_memory(pid: int) -> int | None:
    """Peak resident set size of a process in bytes (Linux), None elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, flags=re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


MAX_FRAME_BYTES = protocol.MAX_FRAME - 33
"""A BINBYTES this long makes an ``S`` frame exactly MAX_FRAME long."""

HEARTBEAT_PAYLOADS = [
    b'{"queued": 5, "spooled": 2}',
    b'{"queued": "7"}',
    b'{"queued": "x"}',
    b'{"queued": NaN}',
    b'{"queued": 1e300, "spooled": -1e300}',
    b'{"queued": {"a": 1}}',
    b'{"spooled": [1]}',
    b"[1, 2]",
    b'"backlog"',
    b"null",
    b"[" * 50 + b"]" * 50,
    b'{"queued": ' + b"9" * 5000 + b"}",
    b'{"queued": 1e999}',
    b"[" * 100_000 + b"]" * 100_000,
]
"""Heartbeats carry the agent's backlog as JSON; lmaster must shrug at nonsense."""


# -- the generator --------------------------------------------------------------


@dataclass
class Case:
    """One fuzz connection: bytes to send, before or after a valid handshake."""

    family: str
    data: bytes
    after_hello: bool
    keep_open: bool = False
    """Send and wait, without closing our side: lmaster's peer timeout must cut it."""
    frames: int = field(init=False)
    """Malformed frames lmaster reads (frames behind one that ends the session do not count)."""

    def __post_init__(self) -> None:
        self.frames = frames_lmaster_reads(self.data, self.after_hello)


def frames_lmaster_reads(data: bytes, after_hello: bool) -> int:
    """Frames of ``data`` up to the first that makes lmaster end the session.

    Before the hello, the first frame always does. After it, heartbeats never
    do, other kinds always do, and a samples frame does when its pickle is
    undecodable or not a list (lmaster's own decode_samples decides). A
    partial frame counts as one.
    """
    count, position = 0, 0
    while position < len(data):
        count += 1
        if not after_hello or len(data) - position < protocol.HEADER_SIZE + 1:
            return count
        (length,) = struct.unpack("!I", data[position : position + protocol.HEADER_SIZE])
        end = position + protocol.HEADER_SIZE + length
        if not 1 <= length <= protocol.MAX_FRAME or end >= len(data):  # bad, partial or last: no need to decode
            return count
        kind, payload = data[position + 4 : position + 5], data[position + 5 : end]
        if kind == protocol.SAMPLES:
            try:
                protocol.decode_samples(protocol.split_batch(payload)[1])
            except protocol.ProtocolError:
                return count
        elif kind != protocol.HEARTBEAT:
            return count
        position = end
    return count


def s_frame(pickled: bytes, batch: bytes | None = None, rng: random.Random | None = None) -> bytes:
    if batch is None:
        batch = rng.randbytes(24) if rng else os.urandom(24)
    return protocol.encode_frame(protocol.SAMPLES, batch + pickled)


def raw_frame(length: int, kind: bytes, body: bytes) -> bytes:
    return struct.pack("!I", length) + kind + body


class Fuzzer:
    """Deterministic (seeded) factory of malformed traffic."""

    def __init__(self, seed: int, marker: Path) -> None:
        self.rng = random.Random(seed)
        self.marker = marker
        self.evil = code_running_pickles(marker) | class_reaching_pickles(marker)
        self.families: list[tuple[str, Callable[[], Case]]] = [
            ("random bytes before hello", self.random_before_hello),
            ("hostile hello", self.hostile_hello),
            ("wrong first frame", self.wrong_first_frame),
            ("absurd length prefix", self.absurd_length),
            ("truncated frame", self.truncated),
            ("code-running pickle", self.code_running),
            ("random pickle bytes", self.random_pickle),
            ("mutated valid pickle", self.mutated_pickle),
            ("deep nesting", self.deep_nesting),
            ("self-referencing memo", self.memo_recursion),
            ("wrong types in valid pickles", self.wrong_types),
            ("short or odd frames", self.odd_frames),
            ("truncated and left open", self.left_open),
            ("former breakers", self.former_breaker),
        ]

    def cases(self, min_frames: int) -> list[Case]:
        cases: list[Case] = []
        # Every family at least a few times, then random picks until enough frames.
        for _round in range(3):
            for _name, make in self.families:
                cases.append(make())
        # Fewer of the cases that cost the most time: a case left open holds its
        # worker for the whole peer timeout, big frames cost lmaster the most decoding.
        expensive = {"truncated and left open": 0.2, "deep nesting": 0.3, "former breakers": 0.1}
        weights = [expensive.get(name, 1.0) for name, _ in self.families]
        frames = sum(case.frames for case in cases)
        while frames < min_frames:
            cases.append(self.rng.choices(self.families, weights)[0][1]())
            frames += cases[-1].frames
        self.rng.shuffle(cases)
        return cases

    # Plain values -----------------------------------------------------------

    def plain(self, depth: int = 0) -> object:
        """A random value of the types a pickle can carry without globals."""
        rng = self.rng
        choice = rng.randrange(16 if depth < 4 else 11)
        if choice == 0:
            return rng.choice([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 5e-324])
        if choice == 1:
            return rng.randrange(-(10**300), 10**300)  # as a value: float() overflows, skipped
        if choice == 2:
            return rng.random() * 1e6
        if choice == 3:
            return rng.randbytes(rng.randrange(8))
        if choice == 4:
            return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12)))
        if choice == 5:
            return rng.choice([None, True, False])
        if choice == 6:
            return bytearray(rng.randbytes(3))
        if choice == 7:
            return rng.randrange(-(2**70), 2**70)
        if choice == 8:
            return frozenset(rng.randrange(100) for _ in range(rng.randrange(4)))
        if choice == 9:
            return "." * rng.randrange(1, 40)
        if choice == 10:
            return ""
        if choice in (11, 12):
            return [self.plain(depth + 1) for _ in range(rng.randrange(5))]
        if choice == 13:
            return tuple(self.plain(depth + 1) for _ in range(rng.randrange(4)))
        return {self.key(): self.plain(depth + 1) for _ in range(rng.randrange(6))}

    def key(self) -> object:
        rng = self.rng
        return rng.choice(
            [
                "".join(rng.choice("abc.!/ _-\n\x00é") for _ in range(rng.randrange(6))),
                rng.randrange(-(2**64), 2**64),
                rng.random(),
                float("nan"),
                None,
                True,
                rng.randbytes(2),
                (1, "a", None),
                frozenset({1, 2}),
            ]
        )

    def odd_sample(self) -> object:
        """Something shaped roughly like a sample, nearly always wrong somewhere."""
        rng = self.rng
        sample = {
            "host": rng.choice(["fuzzhost", 42, None, b"bytes", ["list"], "", "a.b.c", "\x00", 3.5]),
            "sensor": rng.choice(["FuzzSensor", 7, None, "", "x" * 300, ("t",)]),
            "time": rng.choice(
                [float("nan"), float("inf"), -float("inf"), "now", None, True, [1.0], 10**30, -1.0, 1e308]
            ),
            "value": self.plain(),
        }
        for name in rng.sample(list(sample), rng.randrange(3)):
            del sample[name]
        if rng.random() < 0.2:
            sample[self.key()] = self.plain()
        return sample if rng.random() < 0.9 else self.plain()

    def dumps(self, value: object) -> bytes:
        return pickle.dumps(value, protocol=self.rng.randrange(2, 6))

    # Families ---------------------------------------------------------------

    def random_before_hello(self) -> Case:
        data = self.rng.randbytes(self.rng.randrange(1, 4096))
        return Case("random bytes before hello", data, after_hello=False)

    def hostile_hello(self) -> Case:
        rng = self.rng
        good = {"protocol": "fructosa", "version": 1, "host": "fuzz", "agent": "fuzz", "nonce": "00", "mac": "0" * 64}
        variants: list[bytes] = [
            b"",
            b"not json",
            b"\xff\xfe\xfd",
            b"[1, 2, 3]",
            b'"a string"',
            b"null",
            b"[" * 100 + b"]" * 100,
            b"[" * 100_000 + b"]" * 100_000,
            b'{"protocol": "fructosa"',
            b'{"protocol": "fructosa", "version": 1e999}',
            b'{"protocol": "fructosa", "version": 1, "host": "' + b"9" * 5000 + b'"}',
        ]
        for name, value in [
            ("protocol", "graphite"),
            ("version", 2),
            ("version", "1"),
            ("host", ""),
            ("host", 5),
            ("host", None),
            ("host", ["x"]),
            ("nonce", 1),
            ("mac", 1),
            ("mac", None),
            ("mac", "f" * 64),
            ("mac", ""),
            ("mac", "zz"),
            ("mac", "0" * 10_000),
            ("mac", "é" * 64),
        ]:
            message = dict(good)
            message[name] = value
            variants.append(json.dumps(message).encode())
        missing = dict(good)
        del missing[rng.choice(["mac", "host", "protocol", "version", "nonce"])]
        variants.append(json.dumps(missing).encode())
        payload = rng.choice(variants)
        data = protocol.encode_frame(protocol.HELLO, payload)
        if rng.random() < 0.5:  # samples right behind the bad hello must not be decoded
            data += s_frame(self.evil["GLOBAL+REDUCE open"], rng=rng)
        return Case("hostile hello", data, after_hello=False)

    def wrong_first_frame(self) -> Case:
        rng = self.rng
        kind = rng.choice([b"S", b"B", b"A", b"W", b"C", b"Z", b"\x00", b"h"])
        body = rng.choice([b"", rng.randbytes(30), bytes(24) + self.evil["GLOBAL+REDUCE os.system"]])
        return Case("wrong first frame", protocol.encode_frame(kind, body), after_hello=False)

    def absurd_length(self) -> Case:
        rng = self.rng
        length = rng.choice([0, 2**32 - 1, protocol.MAX_FRAME + 1, 2**31, protocol.MAX_FRAME * 4])
        data = raw_frame(length, b"S", rng.randbytes(rng.randrange(100)))
        return Case("absurd length prefix", data, after_hello=rng.random() < 0.5)

    def truncated(self) -> Case:
        """A frame cut short, then the connection closed (from our side)."""
        rng = self.rng
        full = s_frame(self.dumps([self.odd_sample()]), rng=rng)
        cut = rng.randrange(1, len(full))
        return Case("truncated frame", full[:cut], after_hello=rng.random() < 0.7)

    def left_open(self) -> Case:
        rng = self.rng
        data = rng.choice([b"\x00\x00", raw_frame(1000, b"S", b"x" * 10), raw_frame(10, b"H", b"{")])
        return Case("truncated and left open", data, after_hello=rng.random() < 0.5, keep_open=True)

    def code_running(self) -> Case:
        rng = self.rng
        frames = [s_frame(pickled, rng=rng) for pickled in rng.sample(list(self.evil.values()), 3)]
        # Acceptable batches before, so the evil ones arrive mid-session.
        prefix = [s_frame(self.dumps([self.odd_sample() for _ in range(3)]), rng=rng) for _ in range(rng.randrange(4))]
        return Case("code-running pickle", b"".join(prefix + frames), after_hello=True)

    def random_pickle(self) -> Case:
        rng = self.rng
        pickled = b"r\xff\xff\xff\x7f"
        while memo_bomb(pickled):
            header = rng.choice([b"", b"\x80\x02", b"\x80\x04", b"\x80\x05", b"\x80\x02]", b"\x80\x04\x95"])
            pickled = header + rng.randbytes(rng.randrange(0, 2000))
        return Case("random pickle bytes", s_frame(pickled, rng=rng), after_hello=True)

    def mutated_pickle(self) -> Case:
        rng = self.rng
        frames = []
        for _ in range(rng.randrange(1, 12)):
            data = bytearray(self.dumps([self.odd_sample() for _ in range(rng.randrange(1, 4))]))
            for _ in range(rng.randrange(1, 6)):
                position = rng.randrange(len(data))
                action = rng.randrange(3)
                if action == 0:
                    data[position] = rng.randrange(256)
                elif action == 1:
                    data.insert(position, rng.choice(b"cR\x93iobQP(tl.\x94h\x8e\x95\x96\x97"))
                else:
                    del data[position]
            if not memo_bomb(bytes(data)):
                frames.append(s_frame(bytes(data), rng=rng))
        return Case("mutated valid pickle", b"".join(frames), after_hello=True)

    def deep_nesting(self) -> Case:
        """Deep nesting built by opcodes (no recursion here): now and then as
        deep as a 1 MiB frame allows, usually up to a quarter of that (these
        frames cost lmaster the most time per byte)."""
        rng = self.rng
        room = (protocol.MAX_FRAME - 64) // (1 if rng.random() < 0.1 else 4)
        shape = rng.randrange(7)
        if shape == 0:  # lists: ]]]]...aaaa
            n = rng.randrange(1000, room // 2)
            pickled = b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b"."
        elif shape == 1:  # dicts: {0: {0: ...}}
            n = rng.randrange(1000, room // 4)
            pickled = b"\x80\x02]" + b"}K\x00" * n + b"}" + b"s" * n + b"a."
        elif shape == 2:  # tuples as a value (as a key: KNOWN_BREAKERS)
            n = rng.randrange(1000, room - 200)
            pickled = sample_with_raw_value(b")" + b"\x85" * n)
        elif shape == 3:  # MARK-built lists: ((((...llll
            n = rng.randrange(1000, room // 2)
            pickled = b"\x80\x02" + b"(" * n + b"l" * n + b"."
        elif shape == 4:  # marks never closed
            pickled = b"\x80\x02" + b"(" * rng.randrange(1000, room) + b"."
        elif shape == 5:  # a deep list inside a real sample
            n = rng.randrange(1000, room // 2 - 200)
            pickled = sample_with_raw_value(b"]" * n + b"a" * (n - 1))
        else:  # deep but legal-looking: a long chain of single-key dicts of str keys
            n = rng.randrange(100, 5000)
            pickled = sample_with_raw_value((b"}" + unicode("k")) * n + b"K\x01" + b"s" * n)
        return Case("deep nesting", s_frame(pickled, rng=rng), after_hello=True)

    def memo_recursion(self) -> Case:
        rng = self.rng
        variants = [
            b"\x80\x02]\x94h\x00a.",  # l = [l]
            b"\x80\x02]}\x94K\x00h\x00sa.",  # d = {0: d}
            sample_with_raw_value(b"]\x94h\x00a"),  # value = [value]
            # a sample that is its own value
            b"\x80\x02]}q\x00("
            + unicode("host")
            + unicode("fuzz")
            + unicode("sensor")
            + unicode("Self")
            + unicode("time")
            + b"K\x01"
            + unicode("value")
            + b"h\x00ua.",
            # one dict of 50 leaves referenced 20,000 times: the leaf budget must stop the walk
            sample_with_raw_value(
                b"}(" + b"".join(unicode(f"k{i}") + b"K\x01" for i in range(50)) + b"u\x94](" + b"h\x00" * 20_000 + b"e"
            ),
        ]
        frames = [s_frame(variant, rng=rng) for variant in rng.sample(variants, rng.randrange(1, len(variants) + 1))]
        return Case("self-referencing memo", b"".join(frames), after_hello=True)

    def wrong_types(self) -> Case:
        """Valid pickles of plain data in the wrong shape; most keep the session open."""
        rng = self.rng
        first_batch = rng.randbytes(24)
        frames = []
        for _ in range(rng.randrange(1, 40)):
            if rng.random() < 0.95:
                value: object = [self.odd_sample() for _ in range(rng.randrange(1, 8))]
            else:
                value = self.plain()  # probably not a list: lmaster disconnects
            frames.append(s_frame(self.dumps(value), batch=first_batch if not frames else None, rng=rng))
        if rng.random() < 0.3:  # a batch id seen before, with other content
            frames.append(s_frame(self.dumps([self.odd_sample()]), batch=first_batch))
        return Case("wrong types in valid pickles", b"".join(frames), after_hello=True)

    def former_breaker(self) -> Case:
        """The inputs that once crashed or froze lmaster, but its memory bombs."""
        name = self.rng.choice([name for name in KNOWN_BREAKERS if "memo" not in name])
        breaker = KNOWN_BREAKERS[name]
        return Case("former breakers", breaker.data, after_hello=breaker.after_hello)

    def odd_frames(self) -> Case:
        rng = self.rng
        choices = [
            protocol.encode_frame(protocol.SAMPLES, b""),
            protocol.encode_frame(protocol.SAMPLES, rng.randbytes(rng.randrange(1, 25))),
            protocol.encode_frame(protocol.HEARTBEAT, rng.randbytes(rng.randrange(100))),
            protocol.encode_frame(protocol.HEARTBEAT, rng.choice(HEARTBEAT_PAYLOADS)),
            protocol.encode_frame(protocol.ACK, bytes(24)),
            protocol.encode_frame(protocol.HELLO, b"{}"),
            protocol.encode_frame(protocol.WELCOME, b"{}"),
            protocol.encode_frame(protocol.CHALLENGE, b"{}"),
            protocol.encode_frame(bytes([rng.randrange(256)]), b"?"),
            # exactly the largest frame accepted, holding bytes, not a list
            raw_frame(
                protocol.MAX_FRAME,
                b"S",
                bytes(24) + b"\x80\x03B" + struct.pack("<I", MAX_FRAME_BYTES) + bytes(MAX_FRAME_BYTES) + b".",
            ),
        ]
        picked = rng.sample(choices, rng.randrange(1, 4))
        return Case("short or odd frames", b"".join(picked), after_hello=True)


# -- running it against lmaster -------------------------------------------------


class HonestAgent:
    """A protocol-correct agent: one batch every 0.1 s, acknowledgements timed."""

    def __init__(self, port: int) -> None:
        self.peer = Peer(port, "honest", SECRET)
        self.lock = threading.Lock()
        self.sent_at: dict[bytes, float] = {}
        self.latencies: list[float] = []
        self.worst: tuple[float, float] = (0.0, 0.0)
        """(latency, monotonic time sent) of the slowest acknowledgement."""
        self.count = 0
        self.last_time = 0.0
        self.stop_event = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=target, daemon=True) for target in (self._send, self._read)]

    def start(self) -> HonestAgent:
        for thread in self.threads:
            thread.start()
        return self

    def _send(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.count += 1
                sample = {"host": "honest", "sensor": "Seq", "time": time.time(), "value": {"n": self.count}}
                with self.lock:
                    self.sent_at[protocol.batch_id(self.peer.session, self.count)] = time.monotonic()
                self.peer.send([sample], sequence=self.count)
                self.last_time = sample["time"]
                self.stop_event.wait(0.1)
        except Exception as error:  # reported by the test
            self.errors.append(error)

    def _read(self) -> None:
        try:
            while True:
                for batch in self.peer.read_acks():
                    with self.lock:
                        sent = self.sent_at.pop(batch)
                        self.latencies.append(time.monotonic() - sent)
                        self.worst = max(self.worst, (self.latencies[-1], sent))
        except Exception as error:
            if not self.stop_event.is_set():
                self.errors.append(error)

    def finish(self, timeout: float = 5.0) -> None:
        """Stop sending and wait until every batch is acknowledged."""
        self.stop_event.set()
        self.threads[0].join(timeout)
        try:
            wait_for(lambda: not self.sent_at or self.errors, timeout, "every honest batch acknowledged", interval=0.05)
        except AssertionError:
            pass  # the test reports what is left unacknowledged
        self.peer.close()
        self.threads[1].join(timeout)


@dataclass
class Outcome:
    family: str
    ending: str
    """"closed" (by lmaster) is the only good answer."""
    started: float
    ended: float
    size: int


BIG_FRAMES = threading.Semaphore(2)
"""Big frames in flight at a time. lmaster decodes them one by one in a worker
thread: more at once would only queue there, each connection waiting for the
decoding of all those before it (seconds) before lmaster can close it."""


def play(port: int, case: Case, index: int) -> Outcome:
    """Run one case, timed (to name the culprit when the honest agent stalls)."""
    started = time.monotonic()
    try:
        if len(case.data) > 64 << 10:
            with BIG_FRAMES:
                ending = send_case(port, case, index)
        else:
            ending = send_case(port, case, index)
    except Exception as error:  # e.g. lmaster gone: reported with the other outcomes
        ending = f"{type(error).__name__}: {error}"
    return Outcome(case.family, ending, started, time.monotonic(), len(case.data))


def send_case(port: int, case: Case, index: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if case.after_hello:
            welcome = handshake(sock, f"fuzz{index % 8}", SECRET)
            assert "error" not in welcome, welcome
        try:
            sock.sendall(case.data)
            if not case.keep_open:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # lmaster hung up mid-send: that is a refusal
            return "closed"
        return "closed" if closed_by_peer(sock, PEER_TIMEOUT + 4) else "still open"


def master_config(workdir: Path, port: int, carbon_port: int) -> Path:
    secret = workdir / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    conf = workdir / "lmaster.conf"
    options = {"peer timeout": f"{PEER_TIMEOUT:g}", "idle timeout": 30, "secret file": secret}
    conf.write_text(master_ini(workdir, port, carbon_port, level="INFO", lmaster=options))
    return conf


@pytest.fixture
def master(tmp_path: Path, carbon: CarbonCache) -> Iterator[tuple[int, Daemon]]:
    (port,) = free_ports(1)
    with Daemon("lmaster", master_config(tmp_path, port, carbon.pickle_port), tmp_path / "run") as daemon:
        daemon.start(listen_port=port)
        yield port, daemon


@pytest.mark.slow
def test_thousands_of_malformed_frames(master: tuple[int, Daemon], carbon: CarbonCache, tmp_path: Path) -> None:
    port, daemon = master
    started = time.monotonic()
    marker = tmp_path / "pwned"
    fuzzer = Fuzzer(SEED, marker)
    cases = fuzzer.cases(MIN_FRAMES)
    frames = sum(case.frames for case in cases)
    honest = HonestAgent(port).start()
    carbon.wait_for("honest.Seq.n")
    fuzz_start = time.time()
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(lambda item: play(port, item[1], item[0]), enumerate(cases)))
    fuzz_end = time.time()
    honest.finish()
    seed = f"(seed {SEED}; FRUCTOSA_FUZZ_SEED={SEED} replays it)"

    assert daemon.running, f"lmaster died {seed}:\n{daemon.output()[-3000:]}"
    assert not marker.exists(), f"a pickle ran code {seed}"
    assert frames >= MIN_FRAMES
    assert {outcome.family for outcome in outcomes} == {name for name, _ in fuzzer.families}
    # A batch of malformed samples in a well-formed frame is skipped (logged) and
    # the session stays up; every other family must end with lmaster closing.
    may_stay_open = {"deep nesting", "self-referencing memo", "wrong types in valid pickles"}
    unclosed = Counter(
        f"{outcome.family}: {outcome.ending}"
        for outcome in outcomes
        if outcome.ending != "closed" and not (outcome.ending == "still open" and outcome.family in may_stay_open)
    )
    assert not unclosed, f"connections that did not end with lmaster closing them {seed}: {unclosed}"

    assert not honest.errors, f"honest agent disturbed {seed}: {honest.errors!r}"
    assert not honest.sent_at, f"{len(honest.sent_at)} honest batches never acknowledged {seed}"
    assert len(honest.latencies) == honest.count
    latency, sent = honest.worst
    suspects = [(o.family, o.size) for o in outcomes if o.started < sent + latency and o.ended > sent]
    assert latency < MAX_ACK_LATENCY, f"an acknowledgement took {latency:.2f} s {seed}, during {suspects}"
    last = int(honest.last_time)  # not fuzz_end: the agent may stop just before a new second
    assert last >= int(fuzz_end) - 1
    points = carbon.wait_for("honest.Seq.n", lambda points: points[-1][0] >= last, timeout=10)
    during = [when for when, _ in points if int(fuzz_start) <= when <= last]
    gaps = [later - earlier for earlier, later in itertools.pairwise(during)]
    assert during and during[0] <= int(fuzz_start) + 1 and max(gaps, default=1) <= 1, (
        f"honest series has holes during the fuzz {seed}: {during}"
    )
    values = [value for _, value in points]
    assert values == sorted(values) and all(value == int(value) for value in values), "foreign data in honest series"

    peak = peak_memory(daemon.pid)
    assert peak is None or peak < MAX_MASTER_MEMORY, f"lmaster grew to {peak >> 20} MiB {seed}"
    daemon.stop()
    log = (tmp_path / "lmaster.log").read_text()
    output = daemon.output()
    assert "Traceback" not in output, f"lmaster raised {seed}:\n{output[-5000:]}"
    # Refusals are logged once per address and kind of problem, not thousands of times.
    for expected in (
        r"disconnected 127\.0\.0\.1:\d+: (bad hello|closed in the middle of its hello|agent fuzz\d: )",
        r"disconnected 127\.0\.0\.1:\d+: authentication failed",
        r"disconnected 127\.0\.0\.1:\d+: (frame incomplete|no hello) ",
        r"malformed sample from 127\.0\.0\.1:\d+ skipped",
        r"agent fuzz\d+ \(127\.0\.0\.1:\d+, test-peer\) disconnected in the middle of a frame",
    ):
        assert re.search(expected, log), f"no {expected!r} in the log {seed}"
    refusals = re.findall(r"disconnected 127\.0\.0\.1:\d+: .*", log)
    assert len(refusals) <= 5, f"refusals not rate-limited: {refusals}"
    summary = re.search(r"(\d+) connections \((\d+) rejected\), (\d+) batches .* \((\d+) malformed\)", log)
    assert summary, log[-2000:]
    connections, rejected, batches, malformed = map(int, summary.groups())
    assert connections >= len(cases) + 1 and rejected > len(cases) // 3 and malformed > 0
    elapsed = time.monotonic() - started
    print(
        f"fuzz: {frames} malformed frames read by lmaster over {len(cases)} connections ({rejected} rejected), "
        f"{batches} samples frames decoded ({malformed} malformed samples), honest acks <= {latency:.3f} s, "
        f"lmaster peak {(peak or 0) >> 20} MiB, {elapsed:.1f} s {seed}"
    )
    assert elapsed < 60, f"the fuzz run took {elapsed:.0f} s; keep it under a minute"


@pytest.mark.parametrize(
    "sample",
    [
        {"host": "odd", "sensor": "x" * 300, "time": time.time(), "value": 1.0},
        {"host": "odd", "sensor": "Far", "time": 1e30, "value": 1.0},
    ],
    ids=["300-character component", "time 1e30"],
)
def test_lmaster_relays_only_what_carbon_can_store(
    master: tuple[int, Daemon], carbon: CarbonCache, sample: dict
) -> None:
    port, _ = master
    peer = Peer(port, "odd", SECRET)
    try:
        peer.send([sample])
        peer.read_acks()
        for value in (1.0, 2.0):
            # The second control is sent once the first is in whisper: by the time
            # carbon writes it, it has tried to write the odd metric too.
            peer.send([{"host": "odd", "sensor": "Seq", "time": time.time(), "value": value}])
            peer.read_acks()
            carbon.wait_for("odd.Seq", lambda points, value=value: points[-1][1] == value)
    finally:
        peer.close()
    errors = re.findall(r".*(?:Unhandled Error|Error creating|Error writing).*", carbon.log_path.read_text())
    assert not errors, errors[:3]


# -- inputs that break lmaster today ----------------------------------------------


def deep_tuple(depth: int) -> bytes:
    return b")" + b"\x85" * depth


def tuple_dag(depth: int) -> bytes:
    """t = (t', t') repeated: tiny in a pickle, 2**depth work for an uncached hash."""
    return b")" + b"2\x86" * depth


def as_key(raw_key: bytes) -> bytes:
    return sample_with_raw_value(b"}" + raw_key + b"K\x01s")


def colliding_keys(count: int) -> bytes:
    """``count`` distinct keys that all sanitize to ``_``."""
    punctuation = "!#$%&()*+,/:;<=>?@[]^`{|}~ "
    keys = itertools.islice(itertools.product(punctuation, repeat=4), count)
    return sample_with_raw_value(b"}(" + b"".join(unicode("".join(key)) + b"K\x01" for key in keys) + b"u")


def hello_with(**fields: object) -> bytes:
    message = {"protocol": "fructosa", "version": 1, "host": "breaker", "agent": "x", "nonce": "00", **fields}
    return protocol.encode_frame(protocol.HELLO, json.dumps(message).encode())


@dataclass(frozen=True)
class Breaker:
    """A hostile input that broke lmaster at commit 7ae612b, and what must happen instead."""

    after_hello: bool
    data: bytes
    expected: str
    """"refused": lmaster closes the session and logs why; "skipped": the
    sample is logged as malformed and the session goes on; "ignored": the
    session goes on."""
    bug: str


KNOWN_BREAKERS: dict[str, Breaker] = {
    "deeply nested tuple as a dict key": Breaker(
        True,
        s_frame(as_key(deep_tuple(500_000))),
        "refused",
        "SIGSEGV: the C unpickler hashes the key at SETITEM and tuple hashing recurses "
        "without a depth check (C stack overflow); lmaster dies",
    ),
    "tuple DAG as a dict key": Breaker(
        True,
        s_frame(as_key(tuple_dag(64))),
        "refused",
        "a ~150-byte pickle: hashing t=(t',t') is 2**64 work (tuple hashes are not cached); "
        "lmaster's event loop freezes for good",
    ),
    "sixty thousand keys that sanitize alike": Breaker(
        True,
        s_frame(colliding_keys(60_000)),
        "skipped",
        "graphite_paths._components resolves suffix collisions in O(n**2) before the "
        "MAX_LEAVES_PER_SAMPLE budget applies: minutes of frozen event loop",
    ),
    "integer time beyond float range": Breaker(
        True,
        s_frame(pickle.dumps([{"host": "b", "sensor": "s", "time": 10**400, "value": 1}], protocol=2)),
        "skipped",
        "sample_to_datapoints: math.isfinite(10**400) raises OverflowError, not SampleError; "
        "the connection task dies with an unlogged traceback",
    ),
    "integer key of 5000 digits": Breaker(
        True,
        s_frame(pickle.dumps([{"host": "b", "sensor": "s", "time": 1.0, "value": {10**5000: 1}}], protocol=2)),
        "refused",  # integer keys beyond 0..65535 are a protocol error now (hash collisions)
        "sanitize_component: str(int) over 4300 digits raises ValueError, not SampleError",
    ),
    "deeply nested tuple key (repr)": Breaker(
        True,
        s_frame(as_key(deep_tuple(5_000))),
        "refused",
        "sanitize_component: str(tuple) 5000 deep raises RecursionError, not SampleError",
    ),
    "memo index of 2**25": Breaker(
        True,
        s_frame(b"\x80\x02]r\x00\x00\x00\x02a."),
        "refused",
        "the C unpickler sizes its memo table by the index a LONG_BINPUT names and zero-fills it: "
        "these 10 bytes cost lmaster 512 MiB, r\\xff\\xff\\xff\\x7f asks for 32 GiB (OOM)",
    ),
    "heartbeat backlog of 1e999": Breaker(
        True,
        protocol.encode_frame(protocol.HEARTBEAT, b'{"queued": 1e999}'),
        "ignored",
        "master.heartbeat_backlog: int(float('inf')) raises OverflowError, which it did not catch",
    ),
    "heartbeat of deeply nested JSON": Breaker(
        True,
        protocol.encode_frame(protocol.HEARTBEAT, b"[" * 100_000 + b"]" * 100_000),
        "ignored",
        "master.heartbeat_backlog: json.loads raises RecursionError, which it did not catch",
    ),
    "hello whose mac is not ASCII": Breaker(
        False,
        hello_with(mac="é" * 64),
        "refused",
        "auth.macs_equal: hmac.compare_digest raises TypeError for non-ASCII str",
    ),
    "hello of deeply nested JSON": Breaker(
        False,
        protocol.encode_frame(protocol.HELLO, b"[" * 100_000 + b"]" * 100_000),
        "refused",
        "protocol.decode_json caught ValueError but not RecursionError",
    ),
}


def answers(port: int, timeout: float) -> None:
    """A fresh agent gets a batch acknowledged within ``timeout``, or AssertionError."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            handshake(sock, "prober", SECRET)
            sock.sendall(protocol.encode_samples([{"host": "prober", "sensor": "s", "time": time.time(), "value": 1}]))
            kind, _ = read_frame(sock)
            assert kind == protocol.ACK
    except OSError as error:
        raise AssertionError(f"lmaster does not answer: {error!r}") from error


def session_goes_on(sock: socket.socket) -> bool:
    """Whether a good batch sent now on ``sock`` is acknowledged (after any
    acknowledgement of the hostile batch itself)."""
    batch = protocol.batch_id(os.urandom(16), 1)
    sample = {"host": "breaker", "sensor": "Good", "time": time.time(), "value": 1}
    try:
        sock.sendall(protocol.encode_samples([sample], batch[:16], 1))
        sock.settimeout(5)
        while True:
            kind, payload = read_frame(sock)
            if kind == protocol.ACK and batch in protocol.decode_acks(payload):
                return True
    except OSError:
        return False


@pytest.mark.parametrize("name", list(KNOWN_BREAKERS))
def test_known_breakers(name: str, tmp_path: Path) -> None:
    """One hostile frame: handled as ``expected`` and logged, lmaster alive, answering, small."""
    breaker = KNOWN_BREAKERS[name]
    (port, carbon_port) = free_ports(2)  # no carbon: lmaster acknowledges from its spool
    daemon = Daemon("lmaster", master_config(tmp_path, port, carbon_port), tmp_path / "run")
    try:
        daemon.start(listen_port=port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            if breaker.after_hello:
                handshake(sock, "breaker", SECRET)
            address = f"127.0.0.1:{sock.getsockname()[1]}"
            sock.sendall(breaker.data)
            if breaker.expected == "refused":
                assert closed_by_peer(sock, 5), "the hostile connection is still open"
            else:
                assert session_goes_on(sock), f"a {breaker.expected} input ended the session"
        assert daemon.running, "lmaster died"
        answers(port, timeout=3)
        peak = peak_memory(daemon.pid)
        assert peak is None or peak < 256 << 20, f"lmaster grew to {peak >> 20} MiB"
        log = (tmp_path / "lmaster.log").read_text()
        if breaker.expected == "refused":
            assert f"disconnected {address}: " in log, "no log line says why the peer was dropped"
        elif breaker.expected == "skipped":
            assert f"malformed sample from {address} skipped" in log
        assert "Traceback" not in daemon.output(), daemon.output()[-3000:]
    finally:
        daemon.stop(timeout=2)  # a frozen event loop ignores SIGTERM: killed after 2 s


# -- hostile datapoint blocks (``D`` frames, what lagent sends) --------------------

HOSTILE_AGENT = "hostile"
EVIL = "Evil"
"""In every hostile path: no whisper file anywhere may carry it."""


def raw_block(
    paths: bytes,
    times: list[float],
    values: list[float],
    *,
    count: int | None = None,
    paths_size: int | None = None,
    cut: int = 0,
) -> bytes:
    """A block encoding whose header may lie: ``count`` and ``paths_size``
    override the true figures, ``cut`` bytes are dropped from the end."""
    header = struct.pack(
        "<III", 1, len(times) if count is None else count, len(paths) if paths_size is None else paths_size
    )
    data = header + paths + struct.pack(f"<{len(times)}d", *times) + struct.pack(f"<{len(values)}d", *values)
    return data[: len(data) - cut]


def d_frame(block: bytes) -> bytes:
    return protocol.encode_frame(protocol.DATAPOINTS, protocol.batch_id(os.urandom(16), 1) + block)


@dataclass(frozen=True)
class HostileBlock:
    """One ``D`` frame from agent :data:`HOSTILE_AGENT` and what lmaster must do with it."""

    frame: bytes
    refused: bool
    """True: the block's structure lies, lmaster ends the session. False: it
    acknowledges the batch and relays only its valid datapoints."""
    good: str | None = None
    """A valid datapoint of the same block, relayed despite its hostile neighbours."""


def hostile_blocks(now: float) -> dict[str, HostileBlock]:
    def mixed(name: str, path: str, when: float = now, value: float = 1.0) -> HostileBlock:
        """The hostile datapoint between two valid ones (one of which must land)."""
        good = f"{HOSTILE_AGENT}.Good.{name}"
        paths = f"{good}\n{path}\n{HOSTILE_AGENT}.Good.{name}".encode("ascii", "surrogateescape")
        return HostileBlock(d_frame(raw_block(paths, [now, when, now], [1.0, value, 2.0])), refused=False, good=good)

    def whole(paths: bytes, times: list[float], values: list[float], refused: bool, **lies: int) -> HostileBlock:
        return HostileBlock(d_frame(raw_block(paths, times, values, **lies)), refused=refused)

    two = f"{HOSTILE_AGENT}.{EVIL}.a\n{HOSTILE_AGENT}.{EVIL}.b".encode()
    mine = f"{HOSTILE_AGENT}.{EVIL}"
    return {
        # Lengths that lie: decode refuses, lmaster ends the session.
        "paths size larger than the paths": whole(two, [now] * 2, [1.0] * 2, True, paths_size=len(two) + 8),
        "paths size smaller than the paths": whole(two, [now] * 2, [1.0] * 2, True, paths_size=len(two) - 3),
        "paths size 2**32-1": whole(two, [now] * 2, [1.0] * 2, True, paths_size=2**32 - 1),
        "count larger than the arrays": whole(two, [now] * 2, [1.0] * 2, True, count=3),
        "count smaller than the arrays": whole(two, [now] * 2, [1.0] * 2, True, count=1),
        "count 2**32-1": whole(two, [now] * 2, [1.0] * 2, True, count=2**32 - 1),
        "values array truncated": whole(two, [now] * 2, [1.0] * 2, True, cut=8),
        "half a double": whole(two, [now] * 2, [1.0] * 2, True, cut=3),
        "header only": whole(b"", [], [], True, count=5, paths_size=40),
        "shorter than a header": HostileBlock(d_frame(b"\x01\x00\x00"), refused=True),
        "nothing after the batch id": HostileBlock(d_frame(b""), refused=True),
        # Sizes that add up around content that does not: acknowledged, never relayed.
        "more paths than datapoints": whole(two, [now], [1.0], False, paths_size=len(two)),
        "fewer paths than datapoints": whole(f"{mine}.a".encode(), [now] * 3, [1.0] * 3, False),
        "paths but no datapoints": whole(two, [], [], False),
        "non-ASCII path": whole(f"{mine}.caf\u00e9\n{HOSTILE_AGENT}.Good.x".encode(), [now] * 2, [1.0] * 2, False),
        "invalid UTF-8 path": whole(f"{mine}.".encode() + b"\xff\xfe", [now], [1.0], False),
        "NaN value": mixed("nan", f"{mine}.nan", value=math.nan),
        "infinite value": mixed("inf", f"{mine}.inf", value=math.inf),
        "negative infinite value": mixed("ninf", f"{mine}.ninf", value=-math.inf),
        "NaN time": mixed("nantime", f"{mine}.nantime", when=math.nan),
        "infinite time": mixed("inftime", f"{mine}.inftime", when=math.inf),
        "negative time": mixed("negtime", f"{mine}.negtime", when=-1.0),
        "time 2**32": mixed("time32", f"{mine}.time32", when=float(2**32)),
        "time 1e300": mixed("farfuture", f"{mine}.farfuture", when=1e300),
        "another host's path": mixed("other", f"node01.{EVIL}.other"),
        "a host whose name starts like ours": mixed("longer", f"{HOSTILE_AGENT}x.{EVIL}.longer"),
        "lmaster's own metrics": mixed("self", f"fructosa.lmaster.{EVIL}.up"),
        "carbon's own metrics": mixed("carbon", f"carbon.agents.{EVIL}.cpuUsage"),
        "the bare host name": mixed("bare", HOSTILE_AGENT),
        "empty component": mixed("empty", f"{mine}..x"),
        "trailing dot": mixed("trailing", f"{mine}.x."),
        "leading dot": mixed("leading", f".{mine}.x"),
        "empty path": mixed("emptypath", ""),
        "slashes walking out of whisper's tree": mixed("slash", f"{mine}.x/../../../{EVIL}"),
        "space": mixed("space", f"{mine}.a b"),
        "tab": mixed("tab", f"{mine}.a\tb"),
        "NUL": mixed("nul", f"{mine}.a\x00b"),
        "DEL and escape": mixed("escape", f"{mine}.a\x7f\x1b[2J"),
        "carriage return": mixed("cr", f"{mine}.a\rb"),
        "path of 2049 characters": mixed("long", f"{mine}." + "a" * (2049 - len(mine) - 1)),
        "component of 300 characters": mixed("component", f"{mine}." + "c" * 300),
        "path of 900 KiB": mixed("huge", f"{mine}." + "h" * (900 << 10)),
    }


@pytest.mark.slow
def test_hostile_datapoint_blocks(master: tuple[int, Daemon], carbon: CarbonCache, tmp_path: Path) -> None:
    """Each hostile ``D`` frame in turn: lmaster refuses the session (the block's
    sizes lie) or acknowledges and relays only the valid datapoints; then it is
    alive and an honest agent's next datapoint lands. No hostile path reaches
    whisper, nor a file anywhere under the test's directory."""
    port, daemon = master
    honest = Peer(port, "honest", SECRET)
    cases = hostile_blocks(time.time())
    goods: list[str] = []
    try:
        for index, (name, case) in enumerate(cases.items()):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                welcome = handshake(sock, HOSTILE_AGENT, SECRET)
                assert "error" not in welcome, welcome
                sock.sendall(case.frame)
                if case.refused:
                    assert closed_by_peer(sock, 5), f"{name}: lmaster kept the session of a block that lies"
                else:
                    sock.settimeout(5)
                    kind, payload = read_frame(sock)
                    assert kind == protocol.ACK and len(protocol.decode_acks(payload)) == 1, f"{name}: {kind!r}"
            assert daemon.running, f"lmaster died on {name}:\n{daemon.output()[-3000:]}"
            honest.send_datapoints([("honest.Seq.n", (time.time(), float(index)))])
            honest.read_acks()
            carbon.wait_for("honest.Seq.n", lambda points, index=index: points[-1][1] == index, timeout=10)
            if case.good:
                goods.append(case.good)
                carbon.wait_for(case.good, timeout=10)
        # Once a control sent after every hostile block is in whisper, carbon
        # has handled anything lmaster relayed before it.
        honest.send_datapoints([("honest.Seq.last", (time.time(), 1.0))])
        honest.read_acks()
        carbon.wait_for("honest.Seq.last", timeout=10)
    finally:
        honest.close()
    relayed = carbon.metric_paths()
    assert set(goods) <= relayed
    assert not [path for path in relayed if EVIL in path], sorted(relayed)
    assert not [path for path in tmp_path.rglob(f"*{EVIL}*")], "a hostile path became a file"
    carbon_errors = re.findall(r".*(?:Unhandled Error|Error creating|Error writing).*", carbon.log_path.read_text())
    assert not carbon_errors, carbon_errors[:3]
    assert "Traceback" not in daemon.output(), daemon.output()[-3000:]
    log = (tmp_path / "lmaster.log").read_text()
    assert re.search(rf"disconnected 127\.0\.0\.1:\d+: agent {HOSTILE_AGENT}: undecodable datapoints", log), log[-2000:]
    assert re.search(r"malformed sample from 127\.0\.0\.1:\d+ skipped", log), log[-2000:]


def test_a_hello_host_too_long_for_a_path_is_refused_cleanly(master: tuple[int, Daemon], tmp_path: Path) -> None:
    port, daemon = master
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        welcome = handshake(sock, "h" * 255, SECRET)  # over 200 characters: not a path component
        assert "is not a Graphite path component" in welcome.get("error", ""), welcome
        sock.sendall(d_frame(raw_block(b"x.y", [time.time()], [1.0])))
        assert closed_by_peer(sock, 5)
    answers(port, timeout=3)
    assert daemon.running
    assert "Traceback" not in daemon.output(), daemon.output()[-2000:]


# -- in-process properties ------------------------------------------------------

plain_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.integers().map(lambda n: n * 10**350)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
    | st.binary(max_size=10)
)
plain_keys = st.text(max_size=8) | st.integers(min_value=-(2**64), max_value=2**64) | st.floats() | st.booleans()
plain_values = st.recursive(
    plain_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(plain_keys, children, max_size=4)
    ),
    max_leaves=30,
)
times = st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(2**63), max_value=2**63) | plain_leaves
samples = st.fixed_dictionaries(
    {},
    optional={
        "host": st.text(max_size=10) | plain_leaves,
        "sensor": st.text(max_size=10) | plain_leaves,
        "time": times,
        "value": plain_values,
    },
)
FAST = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def check_decoding(data: bytes) -> None:
    """Either ProtocolError, or a list whose every sample gives valid datapoints or SampleError."""
    try:
        decoded = protocol.decode_samples(data)
    except protocol.ProtocolError:
        return
    assert type(decoded) is list
    for sample in decoded:
        try:
            datapoints = sample_to_datapoints(sample)
        except SampleError:
            continue
        for path, (when, value) in datapoints:
            assert is_valid_path(path), path
            assert math.isfinite(when) and math.isfinite(value)


@FAST
@given(st.lists(st.one_of(samples, plain_values), max_size=5), st.integers(min_value=2, max_value=5))
def test_any_plain_pickle_decodes_to_valid_datapoints_or_sample_errors(batch: list, proto: int) -> None:
    check_decoding(pickle.dumps(batch, protocol=proto))


@FAST
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_a_protocol_error_or_plain_data(data: bytes) -> None:
    assume(not memo_bomb(data))  # on a regression it would eat this process's memory
    check_decoding(data)


def opcode_soup(marker: Path) -> st.SearchStrategy[bytes]:
    """Sequences of pickle opcodes, the dangerous ones included (no DUP or
    memo indexes beyond 0: on a regression, an exponential tuple DAG would hang
    this process; KNOWN_BREAKERS has that case)."""
    path = str(marker)
    fragments = [
        b"\x80\x02", b"\x80\x04", b"\x80\x05", b"(", b")", b"]", b"}", b"N", b"K\x01", b"J\xff\xff\xff\xff",
        b"\x8a\x09" + b"\xff" * 9, b"G\x7f\xf8\x00\x00\x00\x00\x00\x00", unicode("host"), unicode("time"),
        unicode("value"), unicode("sensor"), unicode(path), unicode("w"), short_unicode("builtins"),
        short_unicode("open"), b"cbuiltins\nopen\n", b"cos\nsystem\n", b"\x93", b"R", b"ibuiltins\nopen\n",
        b"o", b"\x81", b"\x92", b"b", b"\x82\x01", b"\x83\x01\x00", b"\x84\x01\x00\x00\x00", b"P1\n", b"Q",
        b"a", b"e", b"s", b"u", b"t", b"l", b"d", b"\x85", b"\x86", b"\x87", b"\x94", b"h\x00", b"0", b"1",
        b"\x8f", b"\x90", b"\x91", b"\x96\x01\x00\x00\x00\x00\x00\x00\x00x", b"\x97", b"\x98", b"\x88", b"\x89",
        b".",
    ]  # fmt: skip
    return st.lists(st.sampled_from(fragments), max_size=60).map(b"".join)


@FAST
@given(st.data())
def test_opcode_soup_never_runs_code(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    marker = tmp_path_factory.getbasetemp() / "soup-pwned"
    check_decoding(data.draw(opcode_soup(marker)))
    assert not marker.exists()


@pytest.mark.parametrize("name", list(code_running_pickles(Path("marker"))))
def test_the_code_running_pickles_are_live(name: str, tmp_path: Path) -> None:
    """Without lmaster's restricted unpickler each of them does create its
    marker file, so the marker's absence in the fuzz run means something."""
    marker = tmp_path / "pwned"
    pickle.loads(code_running_pickles(marker)[name])
    assert marker.exists()
    with pytest.raises(protocol.ProtocolError, match="is not allowed"):
        protocol.decode_samples(code_running_pickles(tmp_path / "again")[name])
    assert not (tmp_path / "again").exists()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["queued", "spooled", "x"]), children)
    ),
    max_leaves=10,
)


@FAST
@given(json_values, st.integers(min_value=0, max_value=10))
def test_heartbeat_backlog_of_any_json_is_an_int_or_a_protocol_error(value: object, previous: int) -> None:
    try:
        backlog = heartbeat_backlog(json.dumps(value).encode(), previous)
    except protocol.ProtocolError:
        return
    assert isinstance(backlog, int) and backlog >= 0


def test_a_skipped_sample_contributes_no_datapoints() -> None:
    out: list = []
    with pytest.raises(SampleError):
        sample_to_datapoints(
            {"host": "h", "sensor": "s", "time": 1.0, "value": {"a": 1, "b": [[[[[[[[[1]]]]]]]]]}}, out=out
        )
    assert out == []
