"""Live datapoints for subscribers, by Graphite glob pattern: the tap behind ``GET /api/stream``.

lmaster hands :class:`StreamHub` every checked block (and its own
datapoints, host None); the hub copies each datapoint whose path matches a
subscriber's patterns (:mod:`.graphite_glob`, graphite-web's meaning) into
that subscriber's queue. A WebSocket handler (:mod:`fructosa.http.stream`)
drains the queue to its client.

Costs, on lmaster's hot path:

* nobody subscribed: :meth:`StreamHub.observe` returns at its first line;
* agents send blocks of the same paths over and over, so the hub remembers,
  per block layout (the hash, length and count of its path bytes; a bounded
  LRU), which positions go to which subscriber: a known layout costs one
  hash of the path bytes and one tuple per *matching* datapoint;
* a new layout looks its paths up in a bounded LRU of path → subscribers,
  and only a path never seen is matched, once per distinct pattern (clients
  asking for the same pattern share it) among the candidates an index finds
  by component count and literal first component (host-specific patterns
  meet only their host's paths);
* both caches are emptied when any subscription changes.

A subscriber's queue holds at most ``queue_size`` items; when its client
reads too slowly, the oldest are dropped and counted, and the client is
told ``{"dropped": N}`` before the rest. Putting never waits, so a stalled
client costs its own memory (bounded) and nothing else.

Queue items are live datapoints ``(path, time, value)``, current values
``(path, time, value, True)`` (sent to a late joiner as ``{"current": ...}``)
and ready messages (dicts: acknowledgements, events, errors), in order.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..wire.blocks import Block
from . import Tap
from .graphite_glob import GlobPattern, PatternError, compile_pattern
from .latest import LatestValues

__all__ = ["PatternError", "StreamFull", "StreamHub", "StreamLimits", "Subscriber"]


class StreamFull(RuntimeError):
    """``max_clients`` subscribers are connected already."""


@dataclass(frozen=True)
class StreamLimits:
    queue_size: int = 10_000
    """Items (datapoints, messages) waiting for one client; beyond it the oldest are dropped."""
    max_clients: int = 1000
    max_patterns: int = 100
    """Patterns one client may hold at a time."""
    max_pattern_length: int = 512
    layout_cache: int = 16_384
    """Block layouts remembered (about one per agent and sensor mix)."""
    path_cache: int = 65_536
    """Paths whose subscribers are remembered."""

    def __post_init__(self) -> None:
        for name in ("queue_size", "max_clients", "max_patterns", "max_pattern_length", "layout_cache", "path_cache"):
            if getattr(self, name) < 1:
                raise ValueError(f"stream {name.replace('_', ' ')} must be at least 1, not {getattr(self, name)}")


class Subscriber:
    """One client: its patterns, its bounded queue, and how much it lost since it was last told."""

    __slots__ = ("patterns", "queue", "capacity", "dropped", "dropped_total", "_ready")

    def __init__(self, capacity: int):
        self.patterns: dict[str, GlobPattern] = {}
        self.queue: deque[Any] = deque(maxlen=capacity)
        self.capacity = capacity
        self.dropped = 0
        self.dropped_total = 0
        self._ready = asyncio.Event()

    def put(self, items: list[Any]) -> None:
        """Queue ``items``; the oldest queued ones make room (counted), never waits."""
        excess = len(self.queue) + len(items) - self.capacity
        if excess > 0:
            self.dropped += excess
            self.dropped_total += excess
        self.queue.extend(items)  # a deque with maxlen drops from the left
        self._ready.set()

    def put_message(self, message: dict[str, Any]) -> None:
        self.put([message])

    async def wait(self) -> None:
        """Until something is queued (or a drop is to be told)."""
        await self._ready.wait()

    def take(self) -> tuple[int, list[Any]]:
        """What was dropped since the last call, and everything queued (the queue is emptied)."""
        dropped, items = self.dropped, list(self.queue)
        self.queue.clear()
        self.dropped = 0
        self._ready.clear()
        return dropped, items


_SCAN_SLICE = 20_000
"""Stored series a subscribe looks at between two turns of the event loop (about 20 ms)."""
_Holders = tuple[GlobPattern, set[Subscriber]]


class _PatternIndex:
    """Distinct patterns by what a path must have for them to match, so a path meets only its candidates."""

    __slots__ = ("exact", "by_length", "spanning")

    def __init__(self) -> None:
        self.exact: dict[tuple[int, str], list[_Holders]] = {}
        """(components, literal first component): the usual host-specific pattern."""
        self.by_length: dict[int, list[_Holders]] = {}
        """Components: patterns whose first component has wildcards."""
        self.spanning: list[_Holders] = []
        """Patterns with ``**``: any length."""


_Layout = tuple[tuple[Subscriber, tuple[int, ...], tuple[str, ...]], ...]
"""Per interested subscriber: the block positions it wants and their paths."""


class StreamHub(Tap):
    """Fans datapoints and events out to subscribers; see the module docstring. Event loop only."""

    name = "stream"

    def __init__(self, latest: LatestValues | None = None, limits: StreamLimits | None = None):
        self.latest = latest
        self.limits = limits or StreamLimits()
        self._clients: set[Subscriber] = set()
        self._listening: set[Subscriber] = set()
        """Subscribers with at least one pattern: empty means observe has nothing to do."""
        self._by_pattern: dict[str, _Holders] = {}
        self._layouts: OrderedDict[tuple[int, int, int], _Layout] = OrderedDict()
        self._paths: OrderedDict[str, tuple[Subscriber, ...]] = OrderedDict()
        self._index: _PatternIndex | None = None
        self.matched_paths = 0
        """Paths matched against the patterns (cache misses), for tests and self-monitoring."""
        self.malformed_blocks = 0

    # -- clients ---------------------------------------------------------------------------------------

    def full(self) -> bool:
        return len(self._clients) >= self.limits.max_clients

    def connect(self) -> Subscriber:
        """A new subscriber without patterns; StreamFull at ``max_clients``."""
        if self.full():
            raise StreamFull(f"{self.limits.max_clients} stream clients are connected already")
        subscriber = Subscriber(self.limits.queue_size)
        self._clients.add(subscriber)
        return subscriber

    def disconnect(self, subscriber: Subscriber) -> None:
        self._clients.discard(subscriber)
        self._drop_patterns(subscriber, list(subscriber.patterns))

    def compile(self, patterns: object) -> list[GlobPattern]:
        """The patterns of a ``subscribe`` request, all compiled; PatternError (one line) if any is bad."""
        limit = self.limits.max_patterns
        if not isinstance(patterns, list) or not all(isinstance(pattern, str) for pattern in patterns):
            raise PatternError("subscribe takes a list of pattern strings")
        if len(patterns) > limit:
            raise PatternError(f"at most {limit} patterns per client, not {len(patterns)}")
        return [compile_pattern(pattern, self.limits.max_pattern_length) for pattern in dict.fromkeys(patterns)]

    def subscribe(self, subscriber: Subscriber, patterns: object) -> list[str]:
        """Add patterns (all or none; PatternError says why); queue their current values, then an acknowledgement.

        Returns the patterns the subscriber holds now. Scans the latest values
        at once: :meth:`subscribe_async` is the same without holding the loop.
        """
        compiled = self._new_patterns(subscriber, patterns)
        current = self.current_values(compiled)
        return self._register(subscriber, compiled, current)

    async def subscribe_async(self, subscriber: Subscriber, patterns: object) -> list[str]:
        """:meth:`subscribe`, yielding to the event loop while it scans a large latest-values store."""
        compiled = self._new_patterns(subscriber, patterns)
        found: list[tuple[str, float, float, bool]] = []
        scanned = 0
        for points, cost in self._current_by_host(compiled):
            found.extend(points)
            scanned += cost
            if scanned >= _SCAN_SLICE:
                scanned = 0
                await asyncio.sleep(0)  # agents' frames go on while a client's history is gathered
        del found[self.limits.queue_size :]
        return self._register(subscriber, compiled, found)

    def _new_patterns(self, subscriber: Subscriber, patterns: object) -> list[GlobPattern]:
        compiled = [pattern for pattern in self.compile(patterns) if pattern.text not in subscriber.patterns]
        self._check_room(subscriber, compiled)
        return compiled

    def _check_room(self, subscriber: Subscriber, compiled: list[GlobPattern]) -> None:
        total = len(subscriber.patterns) + len(compiled)
        if total > self.limits.max_patterns:
            raise PatternError(f"at most {self.limits.max_patterns} patterns per client, not {total}")

    def _register(self, subscriber: Subscriber, compiled: list[GlobPattern], current: list[Any]) -> list[str]:
        compiled = [pattern for pattern in compiled if pattern.text not in subscriber.patterns]
        self._check_room(subscriber, compiled)
        for pattern in compiled:
            subscriber.patterns[pattern.text] = pattern
            self._by_pattern.setdefault(pattern.text, (pattern, set()))[1].add(subscriber)
        if subscriber.patterns:
            self._listening.add(subscriber)
        self._invalidate()
        if current:
            subscriber.put(current)
        held = sorted(subscriber.patterns)
        subscriber.put_message({"subscribed": held})
        return held

    def unsubscribe(self, subscriber: Subscriber, patterns: object) -> list[str]:
        """Remove patterns (unknown ones are ignored); queue an acknowledgement; the patterns held now."""
        if not isinstance(patterns, list) or not all(isinstance(pattern, str) for pattern in patterns):
            raise PatternError("unsubscribe takes a list of pattern strings")
        self._drop_patterns(subscriber, patterns)
        held = sorted(subscriber.patterns)
        subscriber.put_message({"unsubscribed": sorted(set(patterns)), "subscribed": held})
        return held

    def _drop_patterns(self, subscriber: Subscriber, patterns: Iterable[str]) -> None:
        changed = False
        for text in patterns:
            if subscriber.patterns.pop(text, None) is None:
                continue
            changed = True
            holders = self._by_pattern[text][1]
            holders.discard(subscriber)
            if not holders:
                del self._by_pattern[text]
        if not subscriber.patterns:
            self._listening.discard(subscriber)
        if changed:
            self._invalidate()

    def _invalidate(self) -> None:
        self._layouts.clear()
        self._paths.clear()
        self._index = None

    # -- what lmaster calls ----------------------------------------------------------------------------

    def observe(self, block: Block, host: str | None) -> None:
        """Queue the block's matching datapoints for their subscribers; returns at once when nobody listens."""
        if not self._listening:
            return
        count = len(block)
        if not count:
            return
        paths = block.paths
        key = (hash(paths), len(paths), count)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._new_layout(paths, count, len(block.values))
            if layout is None:
                return
            self._layouts[key] = layout
            if len(self._layouts) > self.limits.layout_cache:
                self._layouts.popitem(last=False)
        else:
            self._layouts.move_to_end(key)
        times, values = block.times, block.values
        for subscriber, positions, names in layout:
            subscriber.put(
                [(name, times[position], values[position]) for position, name in zip(positions, names, strict=True)]
            )

    def publish_event(self, event: dict[str, Any]) -> None:
        """Send ``{"event": event}`` to every client (agent connected or down, job started or ended, alarms)."""
        if not self._clients:
            return
        message = {"event": event}
        for subscriber in self._clients:
            subscriber.put_message(message)

    # -- matching --------------------------------------------------------------------------------------

    def _new_layout(self, paths: bytes, count: int, value_count: int) -> _Layout | None:
        names = paths.decode("ascii", "replace").split("\n")
        if len(names) != count or value_count != count:
            self.malformed_blocks += 1  # blocks are checked before taps see them: never expected
            return None
        wanted: dict[Subscriber, tuple[list[int], list[str]]] = {}
        for position, name in enumerate(names):
            for subscriber in self.subscribers_of(name):
                positions, kept = wanted.setdefault(subscriber, ([], []))
                positions.append(position)
                kept.append(name)
        return tuple((subscriber, tuple(positions), tuple(kept)) for subscriber, (positions, kept) in wanted.items())

    def subscribers_of(self, path: str) -> tuple[Subscriber, ...]:
        """Who wants ``path`` (cached)."""
        cached = self._paths.get(path)
        if cached is not None:
            self._paths.move_to_end(path)
            return cached
        self.matched_paths += 1
        parts = path.split(".")
        index = self._index or self._build_index()
        found: set[Subscriber] = set()
        for candidates in (
            index.exact.get((len(parts), parts[0]), ()),
            index.by_length.get(len(parts), ()),
            index.spanning,
        ):
            for pattern, holders in candidates:
                if not holders <= found and pattern.matches_parts(parts):
                    found |= holders
        result = tuple(found)
        self._paths[path] = result
        if len(self._paths) > self.limits.path_cache:
            self._paths.popitem(last=False)
        return result

    def _build_index(self) -> _PatternIndex:
        index = self._index = _PatternIndex()
        for pattern, holders in self._by_pattern.values():
            names = pattern.first_names()
            if pattern.has_globstar:
                index.spanning.append((pattern, holders))
            elif names is None:
                index.by_length.setdefault(len(pattern.components), []).append((pattern, holders))
            else:
                for name in names:
                    index.exact.setdefault((len(pattern.components), name), []).append((pattern, holders))
        return index

    def current_values(self, patterns: list[GlobPattern]) -> list[tuple[str, float, float, bool]]:
        """The newest value of every stored series matching one of ``patterns``, by host and path, at most
        ``queue_size`` of them."""
        found: list[tuple[str, float, float, bool]] = []
        for points, _ in self._current_by_host(patterns):
            found.extend(points)
        return found[: self.limits.queue_size]

    def _current_by_host(self, patterns: list[GlobPattern]) -> Iterator[tuple[list[Any], int]]:
        """Per host, its matching current values and how many series were looked at; stops at ``queue_size``."""
        latest, room = self.latest, self.limits.queue_size
        if latest is None or not patterns:
            return
        for host in latest.hosts():
            relevant = [pattern for pattern in patterns if pattern.may_match_first(host)]
            if not relevant:
                continue
            lookups = [pattern.relatives() for pattern in relevant]
            if all(relatives is not None for relatives in lookups):  # e.g. *.CPUPercent.total: no scan of the host
                wanted = sorted({relative for relatives in lookups for relative in relatives or ()})
                stored = [(f"{host}.{relative}", latest.get(host, relative)) for relative in wanted]
                cost = len(wanted)
            else:
                stored = sorted((latest.latest(host) or {}).items())
                cost = len(stored)
                stored = [(path, point) for path, point in stored if any(p.matches(path) for p in relevant)]
            points = [(path, point[0], point[1], True) for path, point in stored if point is not None]
            yield points, cost
            room -= len(points)
            if room <= 0:
                return

    def stats(self) -> dict[str, int]:
        return {
            "clients": len(self._clients),
            "listening": len(self._listening),
            "patterns": len(self._by_pattern),
            "queued": sum(len(subscriber.queue) for subscriber in self._clients),
            "dropped": sum(subscriber.dropped_total for subscriber in self._clients),
            "cached_layouts": len(self._layouts),
            "cached_paths": len(self._paths),
        }
