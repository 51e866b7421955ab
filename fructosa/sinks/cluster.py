"""Several carbon-caches, sharded like carbon's own consistent-hashing relay.

``[Graphite] destinations = a:2004:a, b:2004:b`` makes lmaster put every
path on the carbon that carbon's ``ConsistentHashingRouter`` (and
graphite-web's ``CLUSTER_SERVERS`` lookups) expect it on, ``replication
factor`` copies of it. Each destination is a full :class:`CarbonPickleSink`
with its own queue, resend window and spool directory, so a slow or dead
carbon holds up only its own share: the others keep receiving, and the dead
one's share waits on disk. A batch counts as safe when every destination
holds its part.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
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
        route = self.router.route
        prefix = f"{self.prefix}." if self.prefix else ""
        indices: dict[Destination, list[int]] = {destination: [] for destination in self.shards}
        for index, path in enumerate(block.path_list()):
            for destination in route(prefix + path):
                indices[destination].append(index)
        return {
            destination: block if len(chosen) == len(block) else block.select(chosen)
            for destination, chosen in indices.items()
            if chosen
        }

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
