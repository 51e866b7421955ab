"""The carbon sink's resend window: what it wrote lately, kept as the bytes it wrote.

carbon never acknowledges, so after a broken connection the sink writes the
last ``resend_window`` seconds again (carbon overwrites the same path and
timestamp). Keeping the written buffers themselves, a few per write, means
a resend needs no encoding and the window holds a few thousand objects at a
million datapoints a second, not a tuple per datapoint. Only when the
window must go to the spool are its frames read back into blocks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..wire.blocks import Block
from .carbon_pickle import datapoints_of_frames


@dataclass(slots=True)
class Written:
    """One write to carbon."""

    at: float
    buffers: list[bytes]
    count: int
    """Datapoints in it."""
    size: int
    """block_bytes of its blocks: what it would take in the spool, and what memory bounds count."""
    prefix: str
    """The prefix its paths were written with."""

    def block(self) -> Block:
        """Its datapoints as a block again, the prefix taken off (for the spool, after carbon went away)."""
        datapoints = datapoints_of_frames(b"".join(self.buffers))
        if self.prefix:
            cut = len(self.prefix) + 1
            datapoints = [(path[cut:], point) for path, point in datapoints]
        return Block.of(datapoints)


class ResendWindow:
    """Writes in the order made, oldest first, with their total ``bytes`` (:attr:`Written.size`); and, without
    a spool, the window of a lost connection waiting to be written again (``again``, ``again_count``,
    ``again_bytes``), which the sink counts as queued."""

    def __init__(self) -> None:
        self._writes: deque[Written] = deque()
        self.bytes = 0
        self._again: deque[Written] = deque()
        self.again_count = self.again_bytes = 0

    @property
    def again(self) -> bool:
        return bool(self._again)

    def lose(self) -> int:
        """The connection broke: every write kept is to be written again, before what still waited from an
        earlier break; the datapoints that makes."""
        writes = self.take()
        self._again.extendleft(reversed(writes))
        count = sum(written.count for written in writes)
        self.again_count += count
        self.again_bytes += sum(written.size for written in writes)
        return count

    def take_again(self, now: float) -> list[Written]:
        """What waits to be written again, back in the window as written ``now`` (a break while it is being
        written makes it wait again)."""
        writes = list(self._again)
        self._again.clear()
        self.again_count = self.again_bytes = 0
        for written in writes:
            written.at = now
            self.add(written)
        return writes

    def oldest(self) -> float | None:
        """When the oldest write kept was made (None: none kept)."""
        return self._writes[0].at if self._writes else None

    def add(self, written: Written) -> None:
        self._writes.append(written)
        self.bytes += written.size

    def forget(self, horizon: float, max_bytes: int) -> int:
        """Forget writes made before ``horizon``, then the oldest while over ``max_bytes``; the datapoints
        forgotten for the byte bound (they would not be resent)."""
        writes = self._writes
        while writes and writes[0].at < horizon:
            self.bytes -= writes.popleft().size
        forgotten = 0
        while writes and self.bytes > max_bytes:
            written = writes.popleft()
            self.bytes -= written.size
            forgotten += written.count
        return forgotten

    def take(self) -> list[Written]:
        """Every write kept, oldest first; the window is empty afterwards."""
        writes = list(self._writes)
        self._writes.clear()
        self.bytes = 0
        return writes
