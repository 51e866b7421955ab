"""The carbon sink's connection: one TCP connection to carbon at a time, and the loop that writes to it.

The sink (:mod:`.carbon`) decides what is written and when a batch is safe; this part only connects
(with backoff), writes the buffers its :class:`WriteSource` hands over, notices carbon closing the
connection, and sleeps while there is nothing to write. It knows nothing of batches, the spool or
acknowledgements.

With thousands of agents each block is small and comes alone, so the link would wake, encode and
write once per block. :meth:`CarbonLink.wake_soon` lets the source gather them instead: the first
block of an idle spell wakes the link after a few milliseconds, and what arrived meanwhile goes out
in the same write (one wakeup, one ``send``, one resend-window entry for all of them).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ..backoff import Backoff
from ..ratelog import RateLimitedLog

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0


class WriteSource(Protocol):
    """What the link writes, and who hears how the connection goes."""

    def next_write(self) -> tuple[list[bytes], object] | None:
        """The buffers to write now and a token for :meth:`written`, or None when nothing waits."""

    def written(self, token: object) -> None:
        """The buffers of ``token`` are in carbon's socket (drained to the kernel)."""

    def on_connected(self) -> None:
        """A new connection is up; writes follow."""

    def on_disconnected(self) -> None:
        """The connection ended: what was handed out and not yet :meth:`written` did not make it."""

    def backlog(self) -> str:
        """What waits, for the log."""


class CarbonLink:
    """Connects to carbon, writes what ``source`` hands over, reconnects; see the module docstring."""

    def __init__(self, host: str, port: int, source: WriteSource) -> None:
        self.host = host
        self.port = port
        self.source = source
        self.closing = False
        """Set at shutdown: no new connection is made."""
        self._connected = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._wakeup: asyncio.Future[None] | None = None
        """While the connection has nothing to write: the future :meth:`wake` completes."""
        self._soon: asyncio.TimerHandle | None = None
        self._connect_log = RateLimitedLog(log, period=300.0)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def retarget(self, host: str, port: int) -> None:
        """Another carbon: the current connection is dropped (its source hears it), the next one goes there."""
        self.host, self.port = host, port
        if self._writer is not None:
            self._writer.close()

    def wake(self) -> None:
        """Something to write (or carbon closed the connection): end the idle wait now."""
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def wake_soon(self, delay: float) -> None:
        """Something to write, which may wait ``delay`` seconds for company: wake then, unless woken before.
        Nothing to do while a write is under way: the link looks for more right after it."""
        if self._wakeup is not None and self._soon is None:
            self._soon = asyncio.get_running_loop().call_later(delay, self.wake)

    async def run(self) -> None:
        backoff = Backoff(maximum=10.0)  # carbon is near: probe it often
        while not self.closing:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as error:
                self._connect_log.log(
                    logging.WARNING, "connect", "carbon %s unreachable (%s); %s",
                    self.address, str(error) or type(error).__name__, self.source.backlog(),
                )  # fmt: skip
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            log.info("connected to carbon %s (%s)", self.address, self.source.backlog())
            self._connect_log = RateLimitedLog(log, period=300.0)
            self._connected.set()
            self._writer = writer
            self.source.on_connected()
            try:
                await self._stream(reader, writer)
            except (OSError, ConnectionError) as error:
                log.warning("lost connection to carbon %s: %s", self.address, error)
            finally:
                self._connected.clear()
                self._writer = None
                writer.close()
                self.source.on_disconnected()

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        closed_by_carbon = asyncio.ensure_future(reader.read(1))
        closed_by_carbon.add_done_callback(lambda _: self.wake())
        source = self.source
        try:
            while True:
                write = source.next_write()
                if write is None:
                    await self._idle(closed_by_carbon)
                    continue
                buffers, token = write
                writer.writelines(buffers)
                await writer.drain()
                source.written(token)
        finally:
            closed_by_carbon.cancel()

    async def _idle(self, closed_by_carbon: asyncio.Future) -> None:
        """Wait until :meth:`wake` (now or soon) or carbon closing the connection (ConnectionError then).

        One future per idle spell, no task or timer of its own: the link goes idle after nearly every
        write when agents are many and their blocks small."""
        if closed_by_carbon.done():  # its callback may have run while nobody waited
            raise ConnectionError("connection closed by carbon")
        wakeup = self._wakeup = asyncio.get_running_loop().create_future()
        try:
            await wakeup
        finally:
            self._wakeup = None
            if self._soon is not None:
                self._soon.cancel()
                self._soon = None
        if closed_by_carbon.done():
            raise ConnectionError("connection closed by carbon")
