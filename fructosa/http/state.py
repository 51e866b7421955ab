"""What the HTTP API reads: nodes through a small interface, values from the latest store.

lmaster implements :class:`NodeSource` over its agent table; tests use a
plain list. Keeping the API on this interface (and not on lmaster's
internals) lets both evolve separately and keeps the handlers testable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..taps.latest import LatestValues

STATES = ("up", "late", "down")


@dataclass
class NodeRecord:
    """One node as lmaster knows it: connection, liveness and static facts."""

    hostname: str
    ip_address: str | None = None
    connected: bool = False
    last_seen: float | None = None
    """Unix time of the last frame (data or heartbeat); None: never heard from."""
    heartbeat_interval: float = 30.0
    agent: str | None = None
    """The agent's version string, e.g. ``lagent 0.4.0``."""
    connected_since: float | None = None
    sensors: dict[str, float] = field(default_factory=dict)
    """Sensor name → its current interval in seconds."""
    cpu: str | None = None
    """Processor architecture, ``platform.machine()`` (``x86_64``, ``aarch64``)."""
    cpus: int | None = None
    memory_bytes: int | None = None
    boot_time: float | None = None
    system: str | None = None
    """Operating system, e.g. ``Linux``."""
    platform: str | None = None
    """``platform.platform()``, e.g. ``Linux-6.1.0-18-amd64-x86_64-with-glibc2.36``."""
    gpus: list[str] = field(default_factory=list)
    """GPU model names, one per board."""

    def state(self, now: float, slack: float = 0.0) -> str:
        """``down``: not connected; ``late``: connected but silent for more than two heartbeats; else ``up``."""
        if not self.connected or self.last_seen is None:
            return "down"
        if now - self.last_seen > 2 * self.heartbeat_interval + slack:
            return "late"
        return "up"


class NodeSource(Protocol):
    def nodes(self) -> Iterable[NodeRecord]:
        """Every node known, in any order."""
        ...

    def node(self, hostname: str) -> NodeRecord | None:
        """One node, or None when unknown."""
        ...


class StaticNodes:
    """A :class:`NodeSource` over a fixed collection (tests, demos)."""

    def __init__(self, records: Iterable[NodeRecord] = ()):
        self.records = {record.hostname: record for record in records}

    def nodes(self) -> Iterable[NodeRecord]:
        return list(self.records.values())

    def node(self, hostname: str) -> NodeRecord | None:
        return self.records.get(hostname)


class BuildBudget:
    """A share of the event loop for building answers: a token bucket of seconds.

    It fills at ``share`` seconds per second (at most ``burst`` seconds);
    each build spends what it took. While it is empty, callers serve what they
    built before, a little older, instead of building again, so however many
    clients ask, and whatever they ask, building costs lmaster's loop about
    ``share`` of its time (plus one build).
    """

    def __init__(self, share: float = 0.05, burst: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self.share, self.burst, self.clock = share, burst, clock
        self.credit = burst
        self._last = clock()

    def available(self) -> bool:
        now = self.clock()
        self.credit = min(self.burst, self.credit + (now - self._last) * self.share)
        self._last = now
        return self.credit > 0

    def spend(self, seconds: float) -> None:
        self.credit -= seconds


@dataclass
class HttpState:
    """Everything the handlers read: nodes, the latest-values store, and the clock (tests move it)."""

    nodes: NodeSource
    latest: LatestValues
    clock: Callable[[], float] = time.time
    nodes_cache: dict[tuple[str | None, str | None], tuple[float, bytes]] = field(default_factory=dict)
    """(group_by, state) → (monotonic time built, JSON body) of ``/api/nodes``; see ``nodes_cache_seconds``."""
    build_budget: BuildBudget = field(default_factory=BuildBudget)
    """Bounds the loop time ``/api/nodes`` builds take while answers are cached."""
