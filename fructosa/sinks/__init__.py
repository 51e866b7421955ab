"""Where the master delivers datapoints: the sink interface.

The master checks each batch of datapoints once and hands the block to
every enabled sink (sinks that want tuples call ``block.datapoints()``).
A sink must never block or raise in :meth:`Sink.submit` (one
slow destination must not stall agents or other sinks); it queues, and its
own :meth:`Sink.run` task delivers. A sink is where datapoints are kept:
it must make them durable and decides when a batch may be acknowledged to
its agent. What only looks at the datapoints (a latest-value store, a live
stream, alarms, Prometheus) is a tap (:mod:`fructosa.taps`), not a sink.

Which sinks a configuration asks for: :func:`fructosa.sinks.build.build_sinks`.
This package imports neither the configuration nor the sensors, so a sink
can be used (and tested) without psutil.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..wire.blocks import Block

if TYPE_CHECKING:
    from ..config import MasterConfig


def block_bytes(block: Block) -> int:
    """What a block costs in a sink's memory or spool, about: its paths and two doubles a datapoint.

    Memory bounds count these bytes as well as datapoints, since paths may be 2,000 characters long.
    """
    return len(block.paths) + 16 * len(block)


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

    def pressure(self) -> float:
        """How full this sink is: 0.0 empty, 1.0 where taking more would drop something it holds.

        lmaster stops taking agents' batches near 1.0 (:mod:`fructosa.master.admission`),
        so a sink never has to drop what was acknowledged to make room. The default:
        a sink that never drops.
        """
        return 0.0

    def reconfigure(self, cfg: MasterConfig) -> None:
        """Reload: apply what of ``cfg`` this sink can change while running.

        What it cannot change it logs as taking effect at the next restart.
        The default: nothing of this sink can change (or nothing did).
        Which sinks exist is not this sink's business: lmaster warns when
        ``cfg`` asks for another set of sinks.
        """
        return None
