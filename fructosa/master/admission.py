"""Back-pressure: lmaster stops taking agents' batches while its sinks are nearly full.

lmaster acknowledges a batch once its sinks hold it (memory queue, carbon's
socket or the disk spool). Without a brake, one peer sending as fast as it
can would be acknowledged until the spool is full, and the spool would then
drop its oldest records: other agents' data, already acknowledged, so their
agents have forgotten it. Instead, lmaster stops taking batches when the
sinks' *pressure* (the fullest sink's fill: 1.0 means the next block would
drop something, :meth:`fructosa.sinks.Sink.pressure`) reaches the
high-water mark, and resumes when it falls to the low-water mark. A batch
not taken is not acknowledged: each agent keeps its batches, its window of
unacknowledged frames fills, and it spools on its own disk, so nothing is
lost until every agent's own spool is full as well.

Fairness, simply: while lmaster is congested, and until every connection
that had to wait has had its turn, a connection takes a batch only at its
turn: turns go in the order the connections asked (FIFO), one batch per
turn, one turn at a time, and a connection that wants another batch queues
again behind the others. So each connection's share is one batch (at most
one 1 MiB frame) per round, however fast it sends: a flooding peer gets at
most its round-robin share of what the sinks drain, and cannot starve the
others. Taking one batch at a time also bounds how far the sinks can go past
the high-water mark: by one batch. Outside congestion a batch is taken at
once, with no queue, unless another is still being taken (a large ``S``
frame decoded in a thread): then it queues too, so that many connections
cannot all pass the check and only then all deliver.

The frame loop asks for its turn after reading a data frame and before
taking it (:meth:`Admission.turn`), not before reading: a turn then lasts
only as long as the batch takes to check and hand to the sinks, never as
long as a quiet agent takes to send its next batch. Each waiting connection
holds the one frame it read (as it would hold it in its socket buffer),
reads nothing more, and so acknowledges nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

log = logging.getLogger(__package__)  # one logger for all of lmaster, as admins filter on it

HIGH_WATER = 0.9
"""Pressure at which lmaster stops taking agents' batches (and drops its own datapoints)."""
LOW_WATER = 0.75
"""Pressure at or below which it resumes."""
POLL_INTERVAL = 0.05
"""Seconds between two looks at the sinks' pressure while congested (the sinks drain on their own)."""


@dataclass
class AdmissionCounters:
    congestions: int = 0
    """Times the pressure reached the high-water mark."""
    waits: int = 0
    """Batches that had to wait for their turn."""


class Admission:
    """The gate in front of the flow: see the module docstring."""

    def __init__(
        self,
        pressure: Callable[[], float],
        high: float = HIGH_WATER,
        low: float = LOW_WATER,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        if not 0 < low < high:
            raise ValueError(f"the low-water mark ({low}) must be positive and below the high-water mark ({high})")
        self.pressure = pressure
        self.high, self.low, self.poll_interval = high, low, poll_interval
        self.congested = False
        self.counters = AdmissionCounters()
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._serving: asyncio.Event | None = None
        """The turn in progress (set when it is over); None between turns."""
        self._pump: asyncio.Task | None = None
        self._fast_turn = asyncio.Event()
        """The event of every turn taken without queueing (one object, reused: set when the turn is over)."""

    @property
    def waiting(self) -> int:
        """Connections waiting for their turn."""
        return sum(1 for future in self._waiting if not future.done())

    def is_open(self) -> bool:
        """Whether the sinks can take a batch now; moves between congested and not (with hysteresis)."""
        pressure = self.pressure()
        if self.congested and pressure <= self.low:
            self.congested = False
            log.info("sinks drained (%.0f %% full): taking agents' batches again", 100 * pressure)
        elif not self.congested and pressure >= self.high:
            self.congested = True
            self.counters.congestions += 1
            log.warning(
                "sinks %.0f %% full: not taking agents' batches until %.0f %% (the agents keep and spool them)",
                100 * pressure, 100 * self.low,
            )  # fmt: skip
        return not self.congested

    def take_turn_now(self) -> bool:
        """Start a turn at once when that needs no queue (no congestion, nobody
        waiting or taking a batch: the common case), which the caller ends with
        :meth:`end_turn`; False when it must wait for its :meth:`turn`.

        The same rule as :meth:`turn`, without an ``async with`` (a generator,
        a context manager and an event per batch) on every frame."""
        if not self._waiting and self._serving is None and self.is_open():
            event = self._serving = self._fast_turn
            event.clear()  # whoever waited on its last turn has already been woken
            return True
        return False

    def end_turn(self) -> None:
        """End a turn started by :meth:`take_turn_now`."""
        self._turn_over()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for this connection's turn to take one batch; the turn ends with the ``async with`` block."""
        if self.take_turn_now():
            try:
                yield
            finally:
                self._turn_over()
            return
        self.counters.waits += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if self._pump is None:
            self._pump = asyncio.create_task(self._serve_turns(), name="admission")
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._turn_over()  # granted, then the connection ended before taking it
            else:
                future.cancel()
            raise
        try:
            yield
        finally:
            self._turn_over()

    def _turn_over(self) -> None:
        served, self._serving = self._serving, None
        if served is not None:
            served.set()

    async def _serve_turns(self) -> None:
        """Grant turns in FIFO order, one at a time, while the sinks have room."""
        try:
            while self._waiting:
                if self._serving is not None:  # a turn taken without queueing is not over yet
                    await self._serving.wait()
                    continue
                if not self.is_open():
                    await asyncio.sleep(self.poll_interval)
                    continue
                future = self._waiting.popleft()
                if future.done():
                    continue  # its connection is gone
                served = self._serving = asyncio.Event()
                future.set_result(None)
                await served.wait()
        finally:
            self._pump = None

    def close(self) -> None:
        """Stop granting turns (lmaster is stopping; the connections are ended)."""
        if self._pump is not None:
            self._pump.cancel()
