"""Which carbon-cache(s) a metric path goes to: carbon's consistent-hashing ring.

With several carbon-caches behind one lmaster, every path must land where
carbon's own ``ConsistentHashingRouter`` (``RELAY_METHOD = consistent-hashing``,
the default ``carbon_ch`` hash) would put it: graphite-web's carbonlink and
carbon-relays elsewhere in a site compute the same ring, and a path written
to another cache would be invisible to them or split across two whisper files.
So this module reproduces carbon 1.1.10's ring bit for bit:

* a destination is ``(host, port, instance)``; its ring identity (carbon's
  *node*) is ``(host, instance)`` only, the port does not count, and two
  destinations with the same identity are an error, as in carbon;
* each node gets 100 points on the ring: the first 16 bits (4 hex digits) of
  the md5 of ``"<repr of the (host, instance) tuple>:<i>"`` for i in 0..99, a
  point already taken moving up by one until free (so the order of the
  destinations matters when points collide, as in carbon);
* a path's position is the first 16 bits of the md5 of the path itself; its
  destinations are the distinct nodes met walking the ring clockwise from the
  first point at or after that position (wrapping), at most one lap short of
  the starting point;
* ``replication factor`` of them are used, in that order; with ``diverse
  replicas`` (carbon's default) a node whose host was already used is skipped,
  so replicas land on different machines.

Positions are 16-bit, so the ring is flattened at construction into a table of
65536 answers: routing a path is one md5 and one list lookup, and
:class:`CachedRouter` skips even the md5 for the paths that repeat every
interval. Routes are shared tuples, so callers can group datapoints by them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

POINTS_PER_NODE = 100
"""carbon's ``ConsistentHashRing`` default ``replica_count``."""

POSITIONS = 1 << 16
"""A position is the first 16 bits of an md5."""

DEFAULT_CACHE_ENTRIES = 1 << 18
"""Paths remembered by :class:`CachedRouter` before it starts over: a large
cluster's whole path set (1000 nodes x 250 paths): about 30 bytes of dict per
path, plus the path strings it keeps alive (measured: 7.7 MB for 250000 paths)."""

_INSTANCE = re.compile(r"[A-Za-z0-9_.-]+\Z")
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True)
class Destination:
    """One carbon-cache receiver: carbon's ``(host, port, instance)`` triple."""

    host: str
    port: int
    instance: str | None = None

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``host:port``, ``host:port:instance``, ``[v6 address]:port[:instance]``, as carbon's DESTINATIONS.

        Raises ValueError with a one-line reason.
        """
        spec = text.strip()
        if spec.startswith("["):
            host, bracket, rest = spec[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise ValueError(f"{text!r} is not [address]:port[:instance]")
            rest = rest[1:]
        else:
            host, colon, rest = spec.partition(":")
            if not colon:
                raise ValueError(f"{text!r} has no port (host:port[:instance])")
        port_text, colon, instance = rest.partition(":")
        if not host or any(char.isspace() or char in "[]," for char in host):
            raise ValueError(f"{text!r}: {host!r} is not a host name or address")
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: {port_text!r} is not a TCP port (1-65535)")
        if colon and not _INSTANCE.match(instance):
            raise ValueError(f"{text!r}: instance {instance!r} must be letters, digits, '_', '.' or '-'")
        return cls(host, int(port_text), instance if colon else None)

    @property
    def node(self) -> tuple[str, str | None]:
        """carbon's ring identity of this destination: the port does not count."""
        return (self.host, self.instance)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" + (f":{self.instance}" if self.instance is not None else "")


def parse_destinations(text: str) -> tuple[Destination, ...]:
    """A comma- and/or space-separated list of destinations; ValueError if empty or repeated."""
    destinations = tuple(Destination.parse(item) for item in _SEPARATORS.split(text.strip()) if item)
    if not destinations:
        raise ValueError("no destination given (host:port[:instance], ...)")
    check_distinct(destinations)
    return destinations


def check_distinct(destinations: Iterable[Destination]) -> None:
    """carbon refuses two destinations with the same (host, instance): they would be one ring node."""
    seen: dict[tuple[str, str | None], Destination] = {}
    for destination in destinations:
        if (other := seen.setdefault(destination.node, destination)) is not destination:
            raise ValueError(
                f"{other} and {destination} are the same carbon instance to the ring "
                "(same host and instance; give them distinct instance names)"
            )


def ring_position(key: str | bytes) -> int:
    """carbon's ``carbon_ch`` hash: the first 16 bits of the md5 of the UTF-8 key
    (a key already encoded, such as a block's ASCII path, is hashed as it is)."""
    digest = hashlib.md5(key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")).digest()
    return digest[0] << 8 | digest[1]


class ConsistentHashRing:
    """carbon's consistent-hashing ring over fixed destinations, flattened for speed.

    ``route(path)`` gives the ``replication_factor`` destinations carbon's
    ``ConsistentHashingRouter.getDestinations(path)`` gives, in the same order.
    """

    def __init__(
        self, destinations: Sequence[Destination], replication_factor: int = 1, diverse_replicas: bool = True
    ) -> None:
        self.destinations = tuple(destinations)
        self.replication_factor = replication_factor
        self.diverse_replicas = diverse_replicas
        check_ring(self.destinations, replication_factor, diverse_replicas)
        points = _ring_points(self.destinations)
        ring = [destination for _, destination in points]
        interned: dict[tuple[Destination, ...], tuple[Destination, ...]] = {}
        self._table: list[tuple[Destination, ...]] = []
        previous = -1
        for start, (position, _) in enumerate(points):  # positions previous+1..position start here
            route = self._walk(ring, start)
            route = interned.setdefault(route, route)
            self._table.extend([route] * (min(position, POSITIONS - 1) - previous))
            previous = min(position, POSITIONS - 1)
        self._table.extend([self._table[0]] * (POSITIONS - 1 - previous))  # past the last point: wrap

    def _walk(self, ring: list[Destination], start: int) -> tuple[Destination, ...]:
        """Distinct nodes clockwise from ``start``, stopping one short of a full lap as carbon does."""
        route: list[Destination] = []
        hosts: set[str] = set()
        index, stop = start, (start - 1) % len(ring)
        while index != stop and len(route) < self.replication_factor:
            destination = ring[index]
            if destination not in route and not (self.diverse_replicas and destination.host in hosts):
                route.append(destination)
                hosts.add(destination.host)
            index = (index + 1) % len(ring)
        return tuple(route)

    def route(self, path: str | bytes) -> tuple[Destination, ...]:
        """Where carbon would store ``path`` (the full path as sent, prefix included; bytes: UTF-8)."""
        return self._table[ring_position(path)]

    def route_position(self, position: int) -> tuple[Destination, ...]:
        """Where a path whose :func:`ring_position` is ``position`` (0..65535) goes."""
        return self._table[position]

    def routes(self) -> frozenset[tuple[Destination, ...]]:
        """Every distinct answer :meth:`route` can give (to size per-route queues)."""
        return frozenset(self._table)


def check_ring(destinations: Sequence[Destination], replication_factor: int, diverse_replicas: bool) -> None:
    """ValueError (one line) unless every path can get ``replication_factor`` distinct copies.

    carbon would silently store fewer copies (or, with one destination, send
    the same datapoint twice); a monitoring system should say so instead.
    """
    if not destinations:
        raise ValueError("a ring needs at least one destination")
    check_distinct(destinations)
    if replication_factor < 1:
        raise ValueError(f"replication factor {replication_factor} must be at least 1")
    if replication_factor > len(destinations):
        raise ValueError(
            f"replication factor {replication_factor} exceeds the {len(destinations)} destination(s) configured"
        )
    hosts = len({destination.host for destination in destinations})
    if diverse_replicas and replication_factor > hosts:
        raise ValueError(
            f"replication factor {replication_factor} exceeds the {hosts} distinct host(s) configured, "
            "and diverse replicas puts each copy on another host"
        )


def _ring_points(destinations: Sequence[Destination]) -> list[tuple[int, Destination]]:
    """The sorted ring: POINTS_PER_NODE points per node, collisions moved up in insertion order."""
    taken: dict[int, Destination] = {}
    for destination in destinations:
        for replica in range(POINTS_PER_NODE):
            position = ring_position(f"{destination.node!r}:{replica}")
            while position in taken:
                position += 1
            taken[position] = destination
    return sorted(taken.items(), key=lambda point: point[0])


class CachedRouter:
    """:meth:`ConsistentHashRing.route` memoized: paths repeat every interval.

    The cache is bounded: when it holds ``max_entries`` paths it is emptied and
    refilled by the paths in use, so a burst of one-off paths costs memory for
    a while, never without limit. Paths may be given as ``str`` or as the
    UTF-8 ``bytes`` a block holds (:meth:`route_all`); the two are cached apart.
    """

    def __init__(self, ring: ConsistentHashRing, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a route cache needs room for at least one path")
        self.ring = ring
        self.max_entries = max_entries
        self._cache: dict[str, tuple[Destination, ...]] = {}

    def route(self, path: str | bytes) -> tuple[Destination, ...]:
        """Same answer as ``ring.route(path)``."""
        found = self._cache.get(path)
        if found is None:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            found = self._cache[path] = self.ring.route(path)
        return found

    def route_all(self, paths: Sequence[str | bytes]) -> list[tuple[Destination, ...]]:
        """``[ring.route(path) for path in paths]``, the known paths looked up in one C-level pass."""
        routes = list(map(self._cache.get, paths))
        if None in routes:
            route = self.route
            routes = [found or route(path) for found, path in zip(routes, paths, strict=True)]
        return routes

    def __len__(self) -> int:
        return len(self._cache)
