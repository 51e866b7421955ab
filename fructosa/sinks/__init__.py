"""Where the master delivers datapoints: the sink interface.

The master checks each batch of datapoints once and hands the block to
every enabled sink (sinks that want tuples call ``block.datapoints()``).
A sink must never block or raise in :meth:`Sink.submit` (one
slow destination must not stall agents or other sinks); it queues, and its
own :meth:`Sink.run` task delivers. Graphite's carbon pickle receiver is the
first sink; HTTP, streaming and Prometheus sinks plug in the same way.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from ..wire.blocks import Block


class Sink(abc.ABC):
    name: str

    @abc.abstractmethod
    def submit(self, block: Block, on_safe: Callable[[], None] | None = None) -> None:
        """Queue a block of datapoints for delivery; never blocks, never raises.

        ``on_safe`` is called (once, maybe at once) when the sink holds the
        datapoints safely: delivered, or persisted where a restart finds them.
        lmaster acknowledges a batch to its agent only when every sink did.
        """

    @abc.abstractmethod
    async def run(self) -> None:
        """Deliver until cancelled, reconnecting as needed."""

    @abc.abstractmethod
    async def close(self, timeout: float) -> None:
        """Deliver what is queued within ``timeout`` seconds, persist the rest, stop."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters for logs and self-metrics (queued, sent, dropped…)."""
