"""lagent's memory queue: samples waiting to be encoded into batches."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Generic, TypeVar

from ..ratelog import RateLimitedLog

log = logging.getLogger(__package__)

Sample = TypeVar("Sample")
"""One entry: in lagent, a block of the datapoints of one sample, or of the samples of one tick."""


class SampleQueue(Generic[Sample]):
    """Bounded FIFO of samples that drops (and counts) the oldest when full.

    The bound counts samples, not datapoints, so ``max queued samples`` means
    the same for a sensor of one path and one of hundreds. An entry may hold
    several samples (the block of one tick's sensors): ``put`` says how many,
    ``len`` counts samples, and an entry is dropped or taken whole (the newest
    entry stays even if it alone holds more samples than the bound).
    """

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self._entries: deque[tuple[Sample, int]] = deque()
        self.queued = 0
        """Samples queued (what ``len`` says, read as an attribute on the tick's path: no method to call)."""
        self.dropped = 0
        self._nonempty: asyncio.Event | None = None
        self._drop_log = RateLimitedLog(log, period=60.0)

    @property
    def nonempty(self) -> asyncio.Event:
        """Set while samples are queued, for whoever would wait for them. Made on first use: lagent's
        sender is called when a tick's samples are queued and never waits on it, and an Event set and
        cleared at every tick is two more methods to fetch into cold caches once a second."""
        if self._nonempty is None:
            self._nonempty = asyncio.Event()
            if self._entries:
                self._nonempty.set()
        return self._nonempty

    def __len__(self) -> int:
        """Samples queued."""
        return self.queued

    def put(self, sample: Sample, samples: int = 1) -> None:
        """Queue ``sample``, an entry holding ``samples`` samples."""
        self._entries.append((sample, samples))
        self.queued += samples
        if self.queued > self.max_samples:
            self._drop_oldest()
        if self._nonempty is not None:
            self._nonempty.set()

    def _drop_oldest(self) -> None:
        if len(self._entries) < 2:
            return  # the newest entry stays
        while self.queued > self.max_samples and len(self._entries) > 1:
            _, count = self._entries.popleft()
            self.queued -= count
            self.dropped += count
        self._drop_log.log(
            logging.WARNING, "full",
            "sample queue full (%d samples, lmaster unreachable and no spool?): "
            "dropping the oldest; %d dropped in total",
            self.max_samples, self.dropped,
        )  # fmt: skip

    def take(self, limit: int) -> list[Sample]:
        """The oldest entries, up to ``limit`` samples (at least one entry if ``limit`` is positive)."""
        batch: list[Sample] = []
        taken = 0
        entries = self._entries
        while entries and (taken + entries[0][1] <= limit or (not batch and limit > 0)):
            sample, count = entries.popleft()
            batch.append(sample)
            taken += count
        self.queued -= taken
        if not entries and self._nonempty is not None:
            self._nonempty.clear()
        return batch
