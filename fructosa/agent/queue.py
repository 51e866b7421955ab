"""lagent's memory queue: samples waiting to be encoded into batches."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Generic, TypeVar

from ..ratelog import RateLimitedLog

log = logging.getLogger(__package__)

Sample = TypeVar("Sample")
"""One measurement: in lagent, the datapoints it was flattened to."""


class SampleQueue(Generic[Sample]):
    """Bounded FIFO of samples that drops (and counts) the oldest when full.

    The bound counts samples, not datapoints, so ``max queued samples`` means
    the same for a sensor of one path and one of hundreds.
    """

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self._samples: deque[Sample] = deque()
        self.dropped = 0
        self.nonempty = asyncio.Event()
        self._drop_log = RateLimitedLog(log, period=60.0)

    def __len__(self) -> int:
        return len(self._samples)

    def put(self, sample: Sample) -> None:
        self._samples.append(sample)
        if len(self._samples) > self.max_samples:
            self._samples.popleft()
            self.dropped += 1
            self._drop_log.log(
                logging.WARNING, "full",
                "sample queue full (%d samples, lmaster unreachable and no spool?): "
                "dropping the oldest; %d dropped in total",
                self.max_samples, self.dropped,
            )  # fmt: skip
        self.nonempty.set()

    def take(self, limit: int) -> list[Sample]:
        count = min(limit, len(self._samples))
        batch = [self._samples.popleft() for _ in range(count)]
        if not self._samples:
            self.nonempty.clear()
        return batch
