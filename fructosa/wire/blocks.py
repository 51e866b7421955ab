"""Datapoint blocks: how flattened datapoints travel and wait in FrUCToSA.

An agent flattens its samples itself (:func:`fructosa.graphite_paths.sample_to_datapoints`)
and sends *blocks*: all paths of a batch as one ASCII string, the
timestamps and the values as two arrays of doubles. The master can then
check a whole block with a handful of C-level operations (a byte
translation and a few substring counts for the paths, done once per set of
paths an agent sends; a few big-integer operations on the numbers' bits)
instead of touching every datapoint in Python, and sinks keep blocks as three flat
buffers instead of millions of tuples: nothing for the garbage collector
to walk, an eighth of the memory. Carbon's pickle frames are produced from
a block only when the carbon sink writes them (:mod:`fructosa.sinks.carbon_pickle`).

Encoding (all little-endian)::

    samples: uint32 | count: uint32 | paths_size: uint32
    paths: paths_size bytes, ASCII, the ``count`` paths joined by "\\n"
    times: count float64 (Unix seconds) | values: count float64
"""

from __future__ import annotations

import math
import re
import struct
import sys
import threading
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..graphite_paths import MAX_COMPONENT, MAX_TIMESTAMP, Datapoint
from . import protocol

_HEADER = struct.Struct("<III")
MAX_PATH_LENGTH = 2048
"""Characters in one path: host, sensor and eight levels of ≤ 200 characters."""

_PATH_CHARACTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-."
_VALID_PATH = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_NEWLINE_TO_DOT = bytes.maketrans(b"\n", b".")
_SWAP = sys.byteorder == "big"


class BlockError(ValueError):
    """Bytes that are not a block at all (the peer is broken or hostile)."""


def _numbers(typecode: str, values: Iterable[float] | bytes = ()) -> array:
    if isinstance(values, bytes):
        numbers = array(typecode)
        numbers.frombytes(values)
        if _SWAP:
            numbers.byteswap()
        return numbers
    return array(typecode, values)


def _doubles(values: Iterable[float] | bytes = ()) -> array:
    return _numbers("d", values)


_seconds = _doubles


@dataclass(slots=True)
class Block:
    """Datapoints as three flat buffers; see the module docstring."""

    paths: bytes = b""
    times: array = field(default_factory=_seconds)
    values: array = field(default_factory=_doubles)
    samples: int = 0
    """How many samples the datapoints came from (for per-agent statistics)."""
    time_lanes: int | None = field(default=None, compare=False, repr=False)
    """The bits of ``times`` as one little-endian integer, 64 bits a time, when :func:`all_valid` found every
    time in [0, MAX_TIMESTAMP) on those bits (None otherwise): worked out by the check anyway, and kept so that a
    tap comparing this block's times with an earlier block's does not convert them again. Not encoded."""

    def __len__(self) -> int:
        return len(self.times)

    @classmethod
    def of(cls, datapoints: Sequence[Datapoint], samples: int = 0) -> Block:
        """A block of ``(path, (time, value))`` tuples (paths must be ASCII)."""
        if not datapoints:
            return cls(samples=samples)
        paths, points = zip(*datapoints, strict=True)
        times, values = zip(*points, strict=True)
        return cls("\n".join(paths).encode("ascii"), _seconds(times), _doubles(values), samples)

    def encode(self) -> bytes:
        times, values = self.times, self.values
        if _SWAP:
            times, values = array("d", times), array("d", values)
            times.byteswap()
            values.byteswap()
        header = _HEADER.pack(self.samples, len(times), len(self.paths))
        return b"".join((header, self.paths, times.tobytes(), values.tobytes()))

    @classmethod
    def decode(cls, data: bytes) -> Block:
        """The block in ``data``; BlockError when the sizes do not add up.

        Only the structure is checked here; :func:`check_block` checks the content.
        The header's sample count is the sender's word: it is capped at the
        number of datapoints (a sample yields at least one datapoint that
        counts), so a header claiming 4,294,967,295 samples cannot inflate
        lmaster's statistics.
        """
        if len(data) < _HEADER.size:
            raise BlockError(f"block of {len(data)} bytes is shorter than its header")
        samples, count, paths_size = _HEADER.unpack_from(data)
        expected = _HEADER.size + paths_size + 16 * count
        if len(data) != expected:
            raise BlockError(f"block says {count} datapoints in {expected} bytes but has {len(data)}")
        start = _HEADER.size + paths_size
        return cls(
            data[_HEADER.size : start],
            _seconds(data[start : start + 8 * count]),
            _doubles(data[start + 8 * count :]),
            min(samples, count),
        )

    def path_list(self) -> list[str]:
        return self.paths.decode("ascii").split("\n") if self.times else []

    def datapoints(self, prefix: str = "") -> list[Datapoint]:
        paths = self.path_list()
        if prefix:
            paths = [f"{prefix}.{path}" for path in paths]
        return list(zip(paths, zip(self.times, self.values, strict=True), strict=True))

    def select(self, indices: Sequence[int]) -> Block:
        """The datapoints at ``indices`` (in that order) as a new block."""
        paths, times, values = self.path_list(), self.times, self.values
        return Block(
            "\n".join([paths[i] for i in indices]).encode("ascii"),
            _seconds([times[i] for i in indices]),
            _doubles([values[i] for i in indices]),
        )


def concat(blocks: Sequence[Block]) -> Block:
    """One block holding the datapoints of ``blocks`` in order."""
    blocks = [block for block in blocks if len(block)]
    if len(blocks) == 1:
        return blocks[0]
    times, values = _seconds(), _doubles()
    for block in blocks:
        times += block.times
        values += block.values
    return Block(b"\n".join(block.paths for block in blocks), times, values, sum(block.samples for block in blocks))


class BlockFramer:
    """A block encoded straight into the whole ``D`` frame that carries it: one join of the frame's
    head, the batch id, the block's header and the block's own buffers (no body in between).

    An agent sends one block a tick, of the same shape tick after tick: the same joined paths
    (one object, kept by its layouts while the sensors' shapes stay), samples and datapoints.
    The frame's head and the block's header depend on nothing else, so those of the last shape
    are kept and a tick costs the join alone.
    """

    def __init__(self) -> None:
        self._paths: bytes | None = None
        self._shape = (-1, -1)
        self._heads = (b"", b"")

    def frame(self, block: Block, new_batch_id: Callable[[], bytes]) -> bytes | None:
        """The frame, with the batch id ``new_batch_id`` gives; None (and no id taken) when the
        block has no datapoints or does not fit one frame (or on a big-endian host, whose arrays
        need swapping: :meth:`Block.encode` does that)."""
        paths, times = block.paths, block.times
        count = len(times)
        if paths is not self._paths or self._shape != (block.samples, count):
            size = protocol.BATCH_ID_SIZE + _HEADER.size + len(paths) + 16 * count
            if not count or _SWAP or size + 1 > protocol.MAX_FRAME:
                return None
            self._paths, self._shape = paths, (block.samples, count)
            self._heads = (
                protocol.frame_head(protocol.DATAPOINTS, size),
                _HEADER.pack(block.samples, count, len(paths)),
            )
        frame_head, block_head = self._heads
        return b"".join((frame_head, new_batch_id(), block_head, paths, times, block.values))


def split_for_frames(datapoints: list[Datapoint], max_bytes: int) -> list[list[Datapoint]]:
    """Chunks of ``datapoints`` whose encoded blocks stay under ``max_bytes``."""
    chunks: list[list[Datapoint]] = []
    chunk: list[Datapoint] = []
    size = _HEADER.size
    for datapoint in datapoints:
        cost = len(datapoint[0]) + 17
        if chunk and size + cost > max_bytes:
            chunks.append(chunk)
            chunk, size = [], _HEADER.size
        chunk.append(datapoint)
        size += cost
    if chunk:
        chunks.append(chunk)
    return chunks


def check_block(block: Block, host_prefix: str | None = None) -> tuple[Block, list[str]]:
    """(the block's valid datapoints, why the others were refused).

    Valid: an ASCII dotted path of ``[A-Za-z0-9_-]`` components of at most
    :data:`MAX_COMPONENT` characters (whisper makes each a file name), at most
    :data:`MAX_PATH_LENGTH` characters in all, under ``host_prefix`` when given (an
    agent writes only below its own host name), a finite timestamp whisper
    can store, a finite value. The common case, a block that is all valid,
    is recognised without a Python-level loop over its datapoints.
    """
    if all_valid(block, host_prefix):
        return block, []
    return filter_valid(block, host_prefix)


def all_valid(block: Block, host_prefix: str | None) -> bool:
    count, paths = len(block), block.paths
    if count == 0:
        return not paths
    if _VALID_PATHS.get((paths, host_prefix)) != count:
        if not paths_valid(paths, count, host_prefix):
            return False
        _VALID_PATHS.remember((paths, host_prefix), count)
    time_lanes = _valid_time_lanes(block.times, block.values, count)
    if time_lanes is not None:
        block.time_lanes = time_lanes
        return True
    if not math.isfinite(sum(block.values) + sum(block.times)):  # the exact rule, where the bits were not enough
        return False  # NaN or infinity somewhere (or values too huge to add up): look closer
    return 0 <= min(block.times) and max(block.times) < MAX_TIMESTAMP


def paths_valid(paths: bytes, count: int, host_prefix: str | None) -> bool:
    """Whether ``paths`` are ``count`` valid paths joined by newlines, all below ``host_prefix`` when given."""
    # what is left, when valid, is the separators: compared with newlines made to measure (as fast as slicing a
    # kept template, which would cost every process, lagent included, a megabyte)
    if paths.translate(None, _PATH_CHARACTERS) != b"\n" * (count - 1) or len(paths) < 2 * count - 1:
        return False  # a character outside the allowed set, or not ``count`` paths
    separators = paths.translate(_NEWLINE_TO_DOT)  # one search finds every empty component
    if b".." in separators or separators[:1] == b"." or separators[-1:] == b".":
        return False
    if host_prefix is not None:
        prefix = f"{host_prefix}.".encode("ascii", "replace")  # "?" is in no valid path
        if not paths.startswith(prefix) or paths.count(b"\n" + prefix) != count - 1:
            return False
    if len(paths) > MAX_COMPONENT:  # else no path, hence no component, can be too long
        longest = max(map(len, paths.split(b"\n")))
        if longest > MAX_PATH_LENGTH:
            return False
        if longest > MAX_COMPONENT and max(map(len, separators.split(b"."))) > MAX_COMPONENT:
            return False  # a component whisper cannot make a file name of
    return True


def _numbers_valid(times: array, values: array, count: int) -> bool:
    """True when every time is in [0, MAX_TIMESTAMP) and every value finite, judged on their bits with a few
    big-integer operations over all lanes of 64 bits at once; False means "look closer" (also on a big-endian
    host, or for -0.0 as a time), never "invalid". See :func:`_valid_time_lanes`."""
    return _valid_time_lanes(times, values, count) is not None


def _valid_time_lanes(times: array, values: array, count: int) -> int | None:
    """The bits of ``times`` as one integer (:attr:`Block.time_lanes`) when :func:`_numbers_valid` holds, else None.

    A double is NaN or infinite exactly when its 11 exponent bits are all set: adding one to the exponent
    field then carries into the sign bit's place, and only then. A non-negative double (sign bit clear) is
    below the limit exactly when its bits, read as an integer, are below the limit's: adding
    2**63 - bits(limit) then leaves the top bit clear. No lane carries into the next.
    """
    if _SWAP or len(values) != count:
        return None
    masks = _lane_masks(count)
    time_bits = int.from_bytes(times, "little")
    if time_bits & masks.sign or (time_bits + masks.time_offset) & masks.sign:
        return None
    if ((int.from_bytes(values, "little") & masks.exponent) + masks.exponent_unit) & masks.sign:
        return None
    return time_bits


def times_not_older(newer: array, older: array) -> bool:
    """True when every time of ``newer`` is at least the one at the same position of ``older``, both in
    [0, MAX_TIMESTAMP), judged on their bits as :func:`_numbers_valid` does; False means "look closer".

    For such doubles, bits compare as the numbers do; ``newer + 2**63 - older`` in every lane of 64 bits
    keeps the lane's top bit set exactly when the lane of ``newer`` is not smaller, and never borrows
    from the next lane. A tap uses it to skip a block that a later one of the same paths supersedes.
    """
    count = len(newer)
    if _SWAP or len(older) != count or not count:
        return False
    masks = _lane_masks(count)
    new_bits, old_bits = int.from_bytes(newer, "little"), int.from_bytes(older, "little")
    both = new_bits | old_bits
    if both & masks.sign or (new_bits + masks.time_offset) & masks.sign or (old_bits + masks.time_offset) & masks.sign:
        return False
    return (new_bits + masks.sign - old_bits) & masks.sign == masks.sign


@dataclass(frozen=True, slots=True)
class _LaneMasks:
    """A 64-bit pattern repeated once a datapoint, as one integer: see :func:`_numbers_valid`."""

    sign: int
    exponent: int
    exponent_unit: int
    time_offset: int


_LANE_MASKS: dict[int, _LaneMasks] = {}
_TIME_LIMIT_BITS = struct.unpack("<Q", struct.pack("<d", MAX_TIMESTAMP))[0]


def _lane_masks(count: int) -> _LaneMasks:
    masks = _LANE_MASKS.get(count)
    if masks is None:
        if len(_LANE_MASKS) >= 256:
            _LANE_MASKS.clear()  # block sizes vary: keep the common ones

        def lanes(pattern: int) -> int:
            return int.from_bytes(pattern.to_bytes(8, "little") * count, "little")

        masks = _LANE_MASKS[count] = _LaneMasks(
            lanes(1 << 63), lanes(0x7FF << 52), lanes(1 << 52), lanes((1 << 63) - _TIME_LIMIT_BITS)
        )
    return masks


class _ValidPaths:
    """Path sets (and host prefixes) that passed :func:`paths_valid`, with their datapoint counts.

    An agent sends the same paths block after block; recognising them costs a hash of the bytes
    (computed once per block, and reused by every dict keyed on them) and one comparison, against
    four passes over them and a split. The whole bytes are the key, so nothing is assumed: a block
    with a single byte changed is checked in full. Bounded in entries and bytes, oldest out first;
    lookups are single dict operations, safe from the decoder thread too.
    """

    def __init__(self, max_entries: int = 8192, max_bytes: int = 16 << 20) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: dict[tuple[bytes, str | None], int] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.get = self._entries.get

    def remember(self, key: tuple[bytes, str | None], count: int) -> None:
        if len(key[0]) > self.max_bytes // 64:
            return  # a huge block is rare: not worth pushing out many agents' sets
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = count
            self._bytes += len(key[0])
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                del self._entries[oldest]
                self._bytes -= len(oldest[0])


_VALID_PATHS = _ValidPaths()


def filter_valid(block: Block, host_prefix: str | None) -> tuple[Block, list[str]]:
    try:
        paths = block.path_list()
    except UnicodeDecodeError:
        return Block(samples=block.samples), [f"{len(block)} datapoints with paths that are not ASCII"]
    if len(paths) != len(block) or (not paths and block.paths):
        return Block(samples=block.samples), [f"{len(paths) or 'some'} paths for {len(block)} datapoints"]
    keep: list[int] = []
    errors: list[str] = []
    for index, (path, when, value) in enumerate(zip(paths, block.times, block.values, strict=True)):
        problem = datapoint_problem(path, when, value, host_prefix)
        if problem is None:
            keep.append(index)
        else:
            errors.append(problem)
    valid = block.select(keep) if len(keep) < len(block) else block
    valid.samples = block.samples
    return valid, errors


def datapoint_problem(path: str, when: float, value: float, host_prefix: str | None = None) -> str | None:
    """Why one datapoint cannot go to Graphite, or None."""
    shown = path[:80]
    if len(path) > MAX_PATH_LENGTH:
        return f"path of {len(path)} characters (at most {MAX_PATH_LENGTH}): {shown!r}…"
    if not _VALID_PATH.fullmatch(path):
        return f"path {shown!r} is not dot-separated [A-Za-z0-9_-] components"
    if max(map(len, path.split("."))) > MAX_COMPONENT:
        return f"path {shown!r} has a component of more than {MAX_COMPONENT} characters"
    if host_prefix is not None and not path.startswith(f"{host_prefix}."):
        return f"path {shown!r} is not below the agent's own host {host_prefix!r}"
    if not (0 <= when < MAX_TIMESTAMP):
        return f"time {when!r} of {shown!r} is not a Unix time whisper can store"
    if not math.isfinite(value):
        return f"value {value!r} of {shown!r} is not a finite number"
    return None


def encode_joined(blocks: Sequence[Block], samples: int, prefix: bytes = b"") -> bytes:
    """``prefix``, then the encoding of one block of the datapoints of ``blocks`` in order, from
    ``samples`` samples: what ``concat(blocks)`` encodes to, in one join of the blocks' own buffers
    (no joined arrays, no block in between). An agent's tick sends its samples' blocks so."""
    blocks = [block for block in blocks if block.times]
    if _SWAP:
        joined = concat(blocks)
        joined.samples = samples
        return prefix + joined.encode()
    paths = b"\n".join([block.paths for block in blocks])
    header = _HEADER.pack(samples, sum([len(block.times) for block in blocks]), len(paths))
    return b"".join([prefix, header, paths, *[block.times for block in blocks], *[block.values for block in blocks]])
