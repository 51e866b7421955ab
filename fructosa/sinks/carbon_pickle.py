"""carbon's pickle framing: what the carbon sink writes to port 2004.

A frame is a 4-byte big-endian length, then a pickle (protocol 2) of
``[(path, (timestamp, value)), …]``. carbon's own relay sends at most 500
datapoints a frame and its receiver refuses frames over 1 MiB, so frames
made here respect both. This belongs to the carbon sink, not to the wire:
blocks travel between FrUCToSA's daemons as blocks, and become carbon
frames only when a sink writes them to carbon.
"""

from __future__ import annotations

import pickle
import struct

from ..graphite_paths import Datapoint
from ..wire.blocks import Block

CARBON_DATAPOINTS_PER_FRAME = 500
"""What carbon-relay sends per frame; carbon's receiver refuses frames over 1 MiB."""
CARBON_MAX_FRAME = 1 << 20


def carbon_frames(block: Block, prefix: str = "") -> list[bytes]:
    """carbon pickle frames of ``block`` (``prefix`` in front of every path), ≤ 500 datapoints and < 1 MiB each."""
    datapoints = block.datapoints(prefix)
    frames: list[bytes] = []
    for start in range(0, len(datapoints), CARBON_DATAPOINTS_PER_FRAME):
        frames += _frames_under_cap(datapoints[start : start + CARBON_DATAPOINTS_PER_FRAME])
    return frames


def _frames_under_cap(chunk: list[Datapoint]) -> list[bytes]:
    """One frame, or halves recursively while the pickle is 1 MiB or more (very long paths)."""
    payload = pickle.dumps(chunk, protocol=2)
    if len(payload) < CARBON_MAX_FRAME or len(chunk) == 1:
        return [struct.pack("!L", len(payload)) + payload]
    middle = len(chunk) // 2
    return _frames_under_cap(chunk[:middle]) + _frames_under_cap(chunk[middle:])
