"""The carbon sink's memory queue: blocks waiting to be written, counted in datapoints and bytes.

Kept apart from :mod:`.carbon` so the sink reads as what it decides (spool or memory, write, resend)
while the bookkeeping of what waits, and of what the spool hands back, lives here.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..spool import Spool
from ..wire.blocks import Block, check_block
from . import block_bytes

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Batch:
    """One submitted block and who to tell once it is safe (written to carbon's socket or to the spool)."""

    block: Block
    on_safe: Callable[[], None] | None = None
    record_id: tuple[int, int] | None = None  # set when replayed from the spool
    size: int = 0  # block_bytes(block)

    def safe(self) -> None:
        if self.on_safe is not None:
            on_safe, self.on_safe = self.on_safe, None
            on_safe()


class BatchQueue:
    """Batches in arrival order, with their datapoints (``count``) and block bytes (``size``) summed."""

    def __init__(self) -> None:
        self._batches: deque[Batch] = deque()
        self.count = 0
        self.size = 0

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self._batches)

    def append(self, batch: Batch) -> None:
        self._batches.append(batch)
        self.count += len(batch.block)
        self.size += batch.size

    def put_back(self, batches: list[Batch]) -> None:
        """Batches taken but not written go back to the front, in their order."""
        self._batches.extendleft(reversed(batches))
        self.count += sum(len(batch.block) for batch in batches)
        self.size += sum(batch.size for batch in batches)

    def pop_oldest(self) -> Batch:
        batch = self._batches.popleft()
        self.count -= len(batch.block)
        self.size -= batch.size
        return batch

    def take(self, max_count: int, max_size: int) -> list[Batch]:
        """The oldest batches, until ``max_count`` datapoints or ``max_size`` bytes are reached (at least one)."""
        batches: list[Batch] = []
        count = size = 0
        while self._batches and count < max_count and size < max_size:
            batch = self.pop_oldest()
            count += len(batch.block)
            size += batch.size
            batches.append(batch)
        return batches

    def drain(self) -> list[Batch]:
        """Everything, oldest first; the queue is empty afterwards."""
        batches = list(self._batches)
        self._batches.clear()
        self.count = self.size = 0
        return batches

    def extend(self, batches: Iterable[Batch]) -> None:
        for batch in batches:
            self.append(batch)


def next_spooled(spool: Spool) -> Batch | None:
    """The oldest record of the spool not yet handed out, as a batch; unreadable ones are skipped, loudly."""
    while spool.unread():
        record = spool.read_next()
        if record is None:
            return None
        record_id, payload = record
        try:
            block, refused = check_block(Block.decode(payload))
            if refused:
                raise ValueError(f"{len(refused)} invalid datapoints, the first: {refused[0]}")
        except Exception as error:  # a record we wrote but cannot read: skip it
            log.error("spool %s: unreadable record skipped: %s", spool.directory, error)
            spool.ack(record_id)
            continue
        return Batch(block, record_id=record_id, size=block_bytes(block))
    return None
