"""carbon's pickle framing: what the carbon sink writes to port 2004.

A frame is a 4-byte big-endian length, then a pickle (protocol 2) of
``[(path, (timestamp, value)), …]``. carbon's own relay sends at most 500
datapoints a frame and its receiver refuses frames over 1 MiB, so frames
made here respect both. This belongs to the carbon sink, not to the wire:
blocks travel between FrUCToSA's daemons as blocks, and become carbon
frames only when a sink writes them to carbon.

The pickle is written straight from a block's three buffers, without a
Python tuple per datapoint: it is the opcodes ``pickle.dumps`` would write,
without its memo (which nothing here needs)::

    PROTO 2, EMPTY_LIST, MARK,
    per datapoint: BINUNICODE path, BINFLOAT time, BINFLOAT value, TUPLE2, TUPLE2
    APPENDS, STOP

A path's ``BINUNICODE`` bytes (prefix included) are made once and kept per
block layout (an agent sends the same paths again and again), the doubles
go in with a handful of strided byte copies, and one join assembles the
frames. :func:`pickle.loads`, hence carbon's unpickler, reads back exactly
the list of tuples ``pickle.dumps`` would have written.
"""

from __future__ import annotations

import pickle
import struct
import sys
from array import array
from collections import OrderedDict

from ..wire.blocks import Block

CARBON_DATAPOINTS_PER_FRAME = 500
"""What carbon-relay sends per frame; carbon's receiver refuses frames over 1 MiB."""
CARBON_MAX_FRAME = 1 << 20

_FRAME_START = b"\x80\x02]("  # PROTO 2, EMPTY_LIST, MARK
_FRAME_END = b"e."  # APPENDS, STOP
_NUMBERS = b"G" + bytes(8) + b"G" + bytes(8) + b"\x86\x86"  # BINFLOAT time, BINFLOAT value, TUPLE2, TUPLE2
_NUMBERS_SIZE = len(_NUMBERS)
_LENGTH = struct.Struct("!L")
_LITTLE_ENDIAN = sys.byteorder == "little"
LAYOUT_CACHE = 8192
"""Block layouts (paths of a block, prefix added) kept. Each agent sends its own paths, and they come back in
turn (one block per agent every interval), so the cache must hold every agent's layout or it misses every
time (a least-recently-used cache smaller than the cycle keeps none of it); a miss costs a split and an
opcode per path, ~4× a hit. 8,192 is what lmaster's check keeps of path sets too (:mod:`fructosa.wire.blocks`);
a 100-datapoint layout takes ~7.5 KB, so 5,000 agents take ~37 MB."""
LAYOUT_CACHE_BYTES = 64 << 20
"""…and at most about this much memory in them (paths may be 2,000 characters long)."""
_OVERHEAD = 33 + 16
"""Memory of a path's opcode beyond its characters: a bytes object, two list slots."""


def _path_opcode(path: bytes) -> bytes:
    return b"X" + len(path).to_bytes(4, "little") + path


class _Layout:
    """What the frames of one block's paths look like, numbers left out: per frame, the datapoints it takes
    (first, end) and its parts (length and start, each path's BINUNICODE opcode followed by an empty slot
    for its numbers, end), ready to be copied, filled in and joined."""

    __slots__ = ("frames", "size")

    def __init__(self, paths: bytes, count: int, prefix: bytes) -> None:
        opcodes = [_path_opcode(prefix + path) for path in paths.split(b"\n")] if count else []
        if len(opcodes) != count:
            raise ValueError(f"{len(opcodes)} paths for {count} datapoints")
        self.frames: list[tuple[int, int, list[bytes]]] = []
        self.size = len(paths) + count * (len(prefix) + 5 + _OVERHEAD)
        for first in range(0, count, CARBON_DATAPOINTS_PER_FRAME):
            self._split(opcodes, first, min(first + CARBON_DATAPOINTS_PER_FRAME, count))

    def _split(self, opcodes: list[bytes], first: int, end: int) -> None:
        """One frame, or halves recursively while its pickle would be 1 MiB or more (very long paths)."""
        size = len(_FRAME_START) + len(_FRAME_END) + sum(map(len, opcodes[first:end])) + (end - first) * _NUMBERS_SIZE
        if size < CARBON_MAX_FRAME or end - first == 1:
            parts = [b""] * (2 * (end - first) + 2)
            parts[0], parts[-1] = _LENGTH.pack(size) + _FRAME_START, _FRAME_END
            parts[1:-1:2] = opcodes[first:end]
            self.frames.append((first, end, parts))
            return
        middle = (first + end) // 2
        self._split(opcodes, first, middle)
        self._split(opcodes, middle, end)


class CarbonPickleEncoder:
    """Carbon pickle frames of blocks, ``prefix`` in front of every path; keeps the layouts of recent blocks.

    Not thread-safe: one per sink, used on its event loop.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._prefix = f"{prefix}.".encode("ascii") if prefix else b""
        self._layouts: OrderedDict[tuple[bytes, int], _Layout] = OrderedDict()
        self._layout_bytes = 0
        self._numbers: dict[int, tuple[bytes, struct.Struct]] = {}

    def frames(self, block: Block) -> list[bytes]:
        """The frames of ``block`` (≤ 500 datapoints and < 1 MiB of pickle each), each with its length."""
        count = len(block)
        if not count:
            return []
        layout = self._layout(block.paths, count)
        numbers = self._numbers_of(block)
        frames = []
        for first, end, template in layout.frames:
            parts = template.copy()
            parts[2:-1:2] = numbers if end - first == count else numbers[first:end]
            frames.append(b"".join(parts))
        return frames

    def encode(self, block: Block) -> bytes:
        """All frames of ``block`` as one buffer, ready for the socket."""
        frames = self.frames(block)
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def _layout(self, paths: bytes, count: int) -> _Layout:
        key = (paths, count)
        layout = self._layouts.get(key)
        if layout is not None:
            self._layouts.move_to_end(key)
            return layout
        layout = _Layout(paths, count, self._prefix)
        self._layouts[key] = layout
        self._layout_bytes += layout.size
        while len(self._layouts) > LAYOUT_CACHE or (self._layout_bytes > LAYOUT_CACHE_BYTES and len(self._layouts) > 1):
            _, oldest = self._layouts.popitem(last=False)
            self._layout_bytes -= oldest.size
        return layout

    def _numbers_of(self, block: Block) -> tuple[bytes, ...]:
        """Each datapoint's ``G time G value TUPLE2 TUPLE2`` (pickle's doubles are big-endian)."""
        count = len(block)
        template = self._numbers.get(count)
        if template is None:
            if len(self._numbers) > 64:
                self._numbers.clear()  # block sizes vary a lot: keep the common ones only
            template = self._numbers[count] = (_NUMBERS * count, struct.Struct(f"{_NUMBERS_SIZE}s" * count))
        pattern, splitter = template
        numbers = bytearray(pattern)
        size = len(numbers)
        for offset, doubles in ((1, block.times), (10, block.values)):
            big_endian = array("d", doubles)
            if _LITTLE_ENDIAN:
                big_endian.byteswap()
            halves = memoryview(big_endian).cast("B").cast("I")  # each double as two 4-byte words
            # A view of 4-byte words that starts a few bytes in, so that every record's double begins on a word:
            # two strided copies of words instead of eight of bytes.
            start = offset % 4 or 4
            words = memoryview(numbers)[start : start + size - 4].cast("I")
            first = (offset - start) // 4
            words[first :: _NUMBERS_SIZE // 4] = halves[0::2]
            words[first + 1 :: _NUMBERS_SIZE // 4] = halves[1::2]
            words.release()
        return splitter.unpack(numbers)


def carbon_frames(block: Block, prefix: str = "") -> list[bytes]:
    """carbon pickle frames of ``block`` (``prefix`` in front of every path), ≤ 500 datapoints and < 1 MiB each."""
    return CarbonPickleEncoder(prefix).frames(block)


def datapoints_of_frames(data: bytes) -> list[tuple[str, tuple[float, float]]]:
    """The datapoints in a buffer of whole carbon pickle frames this process made (for the spool, when
    carbon went away after they were written); ``pickle.loads``, since these bytes never came from outside."""
    datapoints: list[tuple[str, tuple[float, float]]] = []
    position = 0
    while position < len(data):
        (size,) = _LENGTH.unpack_from(data, position)
        datapoints += pickle.loads(data[position + 4 : position + 4 + size])
        position += 4 + size
    return datapoints
