"""Several carbon-caches, sharded like carbon's own consistent-hashing relay.

``[Graphite] destinations = a:2004:a, b:2004:b`` makes lmaster put every
path on the carbon that carbon's ``ConsistentHashingRouter`` (and
graphite-web's ``CLUSTER_SERVERS`` lookups) expect it on, ``replication
factor`` copies of it. Each destination is a full :class:`CarbonPickleSink`
with its own queue, resend window and spool directory, so a slow or dead
carbon holds up only its own share: the others keep receiving, and the dead
one's share waits on disk. A batch counts as safe when every destination
holds its part.

Splitting is paid once per *shape* of block, not per datapoint: agents send
the same paths in the same order every interval, so :class:`BlockSplitter`
remembers, per distinct ``paths`` text, each destination's paths (already
joined) and how to pick its times and values; a block of a known shape is
cut with one C-level gather per array and destination.
"""

from __future__ import annotations

import asyncio
import logging
import re
from array import array
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

from ..spool import Spool
from ..wire.blocks import Block
from . import Sink
from .carbon import DEFAULT_MAX_QUEUED_BYTES, CarbonPickleSink
from .ring import CachedRouter, ConsistentHashRing, Destination

if TYPE_CHECKING:
    from ..config import MasterConfig

log = logging.getLogger(__name__)

DEFAULT_PLANNED_DATAPOINTS = 1 << 18
"""Datapoints of the block shapes :class:`BlockSplitter` remembers before it
starts over: about 110 bytes each (the shape's paths, each destination's
paths and positions), so about 30 MB at most."""

Pick = slice | Callable[[array], tuple[float, ...]]
"""Which datapoints of a block one destination stores: a contiguous range, or an ``itemgetter`` of their positions."""


class BlockSplitter:
    """The part of a block each destination stores, planned once per block shape.

    A *plan* is, for every destination that stores some of the block, the
    joined paths of its part and a :data:`Pick` of their positions (None when
    it stores the whole block). Plans are keyed by the block's ``paths``
    bytes, so equal paths in equal order get an equal plan; a new shape is
    planned from :class:`CachedRouter`'s per-path routes. The plans are
    bounded by the datapoints they cover: at ``max_datapoints`` they are
    forgotten and rebuilt from the shapes still in use.
    """

    def __init__(
        self, router: CachedRouter, prefix: str = "", max_datapoints: int = DEFAULT_PLANNED_DATAPOINTS
    ) -> None:
        self.router = router
        self.prefix = f"{prefix}.".encode("ascii") if prefix else b""
        self.max_datapoints = max_datapoints
        self._plans: dict[bytes, tuple[tuple[Destination, bytes, Pick | None], ...]] = {}
        self._planned = 0

    def split(self, block: Block) -> dict[Destination, Block]:
        """The part of ``block`` each destination stores (a path may go to several), in the block's order."""
        if not len(block):
            return {}
        plan = self._plans.get(block.paths)
        if plan is None:
            plan = self._plan(block)
        times, values = block.times, block.values
        return {
            destination: block if pick is None else Block(paths, _gather(times, pick), _gather(values, pick))
            for destination, paths, pick in plan
        }

    def _plan(self, block: Block) -> tuple[tuple[Destination, bytes, Pick | None], ...]:
        paths = block.paths.split(b"\n")
        keys = (b"\n" + block.paths).replace(b"\n", b"\n" + self.prefix).split(b"\n")[1:] if self.prefix else paths
        chosen: dict[Destination, list[int]] = {}
        for index, route in enumerate(self.router.route_all(keys)):
            for destination in route:
                chosen.setdefault(destination, []).append(index)
        plan = tuple(
            (destination, block.paths, None)
            if len(indices) == len(paths)
            else (destination, b"\n".join([paths[index] for index in indices]), _pick(indices))
            for destination, indices in chosen.items()
        )
        if self._planned + len(paths) > self.max_datapoints:
            self._plans.clear()
            self._planned = 0
        if len(paths) <= self.max_datapoints:
            self._plans[block.paths] = plan
            self._planned += len(paths)
        return plan

    def __len__(self) -> int:
        """Block shapes planned."""
        return len(self._plans)


def _pick(indices: list[int]) -> Pick:
    if indices[-1] - indices[0] + 1 == len(indices):
        return slice(indices[0], indices[-1] + 1)
    return itemgetter(*indices)  # two or more positions (one is a range): a tuple comes back


def _gather(numbers: array, pick: Pick) -> array:
    if isinstance(pick, slice):
        return numbers[pick]
    return array(numbers.typecode, pick(numbers))


def destination_label(destination: Destination) -> str:
    """A name usable as a path component and directory name."""
    text = f"{destination.host}_{destination.port}" + (f"_{destination.instance}" if destination.instance else "")
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


class CarbonClusterSink(Sink):
    name = "graphite"

    def __init__(
        self,
        ring: ConsistentHashRing,
        prefix: str = "",
        max_queued: int = 1_000_000,
        spool: Spool | None = None,
        resend_window: float = 5.0,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
    ) -> None:
        self.ring = ring
        self.router = CachedRouter(ring)
        self.splitter = BlockSplitter(self.router, prefix)
        self.prefix = prefix
        self.spool = spool
        self.shards: dict[Destination, CarbonPickleSink] = {}
        for destination in ring.destinations:
            shard_spool = None
            if spool is not None:  # each shard replays on its own: one spool directory each
                shard_spool = Spool(Path(spool.directory) / destination_label(destination), spool.max_bytes)
            shard = CarbonPickleSink(
                destination.host, destination.port, prefix, max_queued, shard_spool, resend_window, max_queued_bytes
            )  # fmt: skip
            shard.name = f"graphite.{destination_label(destination)}"
            self.shards[destination] = shard

    def fds(self) -> list[int]:
        return [fd for shard in self.shards.values() if shard.spool for fd in shard.spool.fds()]

    def split(self, block: Block) -> dict[Destination, Block]:
        """The part of ``block`` each destination stores (a path may go to several)."""
        return self.splitter.split(block)

    def submit(self, block: Block, on_safe: Callable[[], None] | None = None) -> None:
        parts = self.split(block)
        if not parts:
            if on_safe:
                on_safe()
            return
        pending = [len(parts)]

        def part_safe() -> None:
            pending[0] -= 1
            if pending[0] == 0 and on_safe is not None:
                on_safe()

        for destination, part in parts.items():
            self.shards[destination].submit(part, part_safe)

    def pressure(self) -> float:
        """The fullest destination's: one carbon away fills its own spool, and stops everyone."""
        return max((shard.pressure() for shard in self.shards.values()), default=0.0)

    def reconfigure(self, cfg: MasterConfig) -> None:
        """Reload: the ring (destinations, prefix) is fixed while running, since moving
        paths between caches would split their series; a change waits for the restart."""
        graphite = cfg.graphite
        if graphite.destinations != self.ring.destinations or graphite.prefix != self.prefix:
            log.warning("reload: a change of [Graphite] destinations or prefix takes effect at the next restart")
        for shard in self.shards.values():
            shard.resend_window = graphite.resend_window
            shard.max_queued, shard.max_queued_bytes = graphite.max_queued_datapoints, graphite.max_queued_bytes

    async def run(self) -> None:
        await asyncio.gather(*(shard.run() for shard in self.shards.values()))

    async def close(self, timeout: float) -> None:
        await asyncio.gather(*(shard.close(timeout) for shard in self.shards.values()))

    def stats(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for shard in self.shards.values():
            for key, value in shard.stats().items():
                totals[key] = totals.get(key, 0) + value
                totals[f"{destination_label_of(shard)}.{key}"] = value
        return totals


def destination_label_of(shard: CarbonPickleSink) -> str:
    return shard.name.removeprefix("graphite.")
