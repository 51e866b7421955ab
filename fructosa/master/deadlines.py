"""Read deadlines of every agent connection, kept by one watch task.

An agent connection reads frame after frame: between frames the agent may stay
silent for the idle timeout (it sends heartbeats when quiet); once a frame's
first byte is in, the rest must follow within the peer timeout. Giving each
read a timer of its own (``asyncio.wait_for``: on Python 3.11 a task, two
futures and a timer per call, three calls per frame) cost more than taking
the frame itself when thousands of agents send small frames. Instead each
connection keeps one :class:`ReadDeadline` (a time and the error due then,
two assignments per read) and one :class:`DeadlineWatch` task compares every
deadline once per tick; a connection past its deadline gets that error raised
in its pending read (:meth:`asyncio.StreamReader.set_exception`), exactly as
``wait_for`` raised it, and ends as it did. A deadline therefore fires at most
one tick late: a tenth of the shortest timeout, between :data:`MIN_TICK` and
:data:`MAX_TICK` seconds.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

MIN_TICK = 0.01
MAX_TICK = 1.0
"""Seconds between two looks at the deadlines: a tenth of the shortest timeout, within these bounds."""


class ReadDeadline:
    """When one connection's pending read must have ended, and what it raises otherwise."""

    __slots__ = ("reader", "at", "error")

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.at = math.inf
        """Event-loop time (``loop.time()``) of the deadline; infinity while not reading."""
        self.error: Callable[[], BaseException] = asyncio.TimeoutError

    def expire(self) -> None:
        """Raise the deadline's error in the pending read (and every later one)."""
        self.at = math.inf
        self.reader.set_exception(self.error())


class DeadlineWatch:
    """The deadlines of every connection, checked by one task; see the module docstring."""

    def __init__(self, shortest_timeout: Callable[[], float]) -> None:
        self.shortest_timeout = shortest_timeout
        """The shortest of the timeouts in force (read at every tick: a reload may change it)."""
        self._deadlines: set[ReadDeadline] = set()
        self._task: asyncio.Task | None = None

    def __len__(self) -> int:
        return len(self._deadlines)

    def watch(self, reader: asyncio.StreamReader) -> ReadDeadline:
        """A deadline for the reads of ``reader``, watched until :meth:`forget`."""
        deadline = ReadDeadline(reader)
        self._deadlines.add(deadline)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="read-deadlines")
        return deadline

    def forget(self, deadline: ReadDeadline) -> None:
        self._deadlines.discard(deadline)

    def tick(self) -> float:
        return min(MAX_TICK, max(MIN_TICK, self.shortest_timeout() / 10))

    def check(self, now: float) -> int:
        """Expire every deadline past ``now``; how many."""
        expired = [deadline for deadline in self._deadlines if deadline.at <= now]
        for deadline in expired:
            deadline.expire()
        return len(expired)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._deadlines:
                await asyncio.sleep(self.tick())
                self.check(loop.time())
        finally:
            self._task = None

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
