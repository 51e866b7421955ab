"""The newest value of every series, and a short history of the main ones.

lmaster hands every checked block to its taps; :class:`LatestValues` keeps,
per host, the newest ``(timestamp, value)`` of each Graphite path, which is
what ``GET /api/nodes/HOST/latest``, the nodes table's CPU and memory columns
and (later) ``/metrics`` read. For the node page's charts it also keeps a
short history of the *main series* (CPU, memory, network and disk traffic,
Slurm jobs: :data:`DEFAULT_MAIN_SERIES`).

Memory is the design constraint: 5,000 hosts × 300 series must fit in about
100 MB. So nothing is a Python object per series:

* the path relative to its host (``CPUPercent.3``) is interned once for the
  whole cluster and becomes a small integer (*gid*); hosts mostly share their
  relative paths, so a few thousand strings serve every host;
* each host keeps three flat arrays, sorted by gid: gids (4 bytes), times and
  values (8 bytes each), found by :func:`bisect.bisect_left`;
* interned names are reference-counted by the hosts holding them, and
  :meth:`LatestValues.prune` drops series that stopped (finished Slurm jobs),
  so the interning table does not grow forever.

Measured (``tests/test_latest_values.py::test_memory_per_series``, tracemalloc,
5,000 hosts × 300 series incl. the block-layout caches, without history):
about 27 bytes per series, 41 MB in all.

Observing is on lmaster's hot path. An agent sends blocks of the same paths
over and over, so each host remembers the slot of every position for its last
few block layouts (keyed by the hash and length of the block's path bytes).
Storing a block's values is one loop of array stores (about 80 µs per
500-datapoint block), so it is deferred: each host holds its last block
unstored, and a new block of the same layout whose every time is at least
the held one's simply replaces it, since storing both in turn would leave
what storing the new one alone leaves. lagent stamps a tick's samples with
one time, so both blocks mostly have one time throughout
(:func:`~fructosa.taps.common_time`, a copy of the times' bytes and one
comparison in C), and comparing those two numbers decides; otherwise
:func:`lanes_not_older` does (three big-integer operations on the bits of
the two blocks' times, which lmaster's block check converted already,
:attr:`~fructosa.wire.blocks.Block.time_lanes`). The held block is stored
before anything reads or moves the arrays; so a host sending the same
sensors costs about 2 µs a block while nobody asks, and one store per read.
A reader of every host (a ``/metrics`` scrape, the minutely prune) has them
stored a slice at a time first (:meth:`LatestValues.store_held_in_slices`): 5,000 hosts' held
blocks in one go would keep the event loop from everything else for a
quarter of a second.
The first block of a layout costs about 600 µs.

History: for each main series, the points of the last ``history_seconds`` at
the series' own rate, at most ``history_points``, at most
``max_history_series`` series per host: 16 bytes a point, so the defaults
(300 s, 60 points, 32 series) cost at most 30 KB per host; a node with eight
CPUs, memory and four traffic counters about 6 KB at a 10 s interval (5,000
such nodes: 31 MB).
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..wire.blocks import _SWAP, Block, _lane_masks
from . import Tap, common_time

DEFAULT_MAIN_SERIES: tuple[str, ...] = (
    "CPUPercent.*",
    "VirtualMemory.percent",
    "SwapMemory.percent",
    "LoadAverage.*",
    "NetIOCounters.bytes_sent",
    "NetIOCounters.bytes_recv",
    "DiskIOCounters.read_bytes",
    "DiskIOCounters.write_bytes",
    "SlurmJobs.count",
    "SlurmJobs.*.cpu_percent",
    "SlurmJobs.*.rss",
    "GPU.*.utilization.gpu",
)
"""Paths relative to the host whose history is kept; ``*`` is one path component."""

_LAYOUTS_PER_HOST = 4
_PER_CPU = re.compile(r"CPUPercent\.[0-9]+")
_NO_SLOT = -1
SLICE_VALUES = 50_000
"""Held values stored per slice by :meth:`LatestValues.store_held_in_slices` (~8 ms of the loop)."""


_COMPONENT = re.compile(r"[A-Za-z0-9_-]+|\*\*?")
MAX_PATTERN_LENGTH = 200


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a series glob, or None.

    Components are names, ``*`` (one component) or ``**`` (one or more), at most one
    ``**``: patterns come from HTTP clients, and ``**`` twice would make a regex
    that backtracks exponentially.
    """
    if not 0 < len(pattern) <= MAX_PATTERN_LENGTH:
        return f"a series pattern has 1 to {MAX_PATTERN_LENGTH} characters"
    components = pattern.split(".")
    if not all(_COMPONENT.fullmatch(component) for component in components):
        return "a series pattern is dot-separated components, each [A-Za-z0-9_-]+, * or **"
    if components.count("**") > 1:
        return "a series pattern has at most one **"
    return None


def pattern_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex for series globs over relative paths (see :func:`pattern_problem`); ValueError if one is bad."""
    parts = []
    for pattern in patterns:
        problem = pattern_problem(pattern)
        if problem:
            raise ValueError(f"{problem}: {pattern[:80]!r}")
        components = ["[A-Za-z0-9_.-]+" if c == "**" else "[A-Za-z0-9_-]+" if c == "*" else re.escape(c)
                      for c in pattern.split(".")]  # fmt: skip
        parts.append("(?:" + r"\.".join(components) + ")")
    return re.compile("|".join(parts) or "(?!)")


@dataclass(frozen=True)
class LatestLimits:
    max_hosts: int = 20_000
    max_series_per_host: int = 5_000
    history_seconds: float = 300.0
    history_points: int = 60
    max_history_series: int = 32
    series_ttl: float = 3600.0
    """:meth:`LatestValues.prune` forgets series with no value for this long."""


def time_lanes(times: array) -> int | None:
    """The bits of ``times`` as one integer, 64 bits a time, when every time is in [0, MAX_TIMESTAMP); else None.

    For such doubles the bits compare as the numbers do (the rule of
    :func:`~fructosa.wire.blocks.times_not_older`). Worked out once per block
    and kept with the held block, so that judging whether the next block
    supersedes it reads the new block's times only (one conversion, not two,
    and no second range check).
    """
    count = len(times)
    if _SWAP or not count:
        return None
    masks = _lane_masks(count)
    lanes = int.from_bytes(times, "little")
    if (lanes | (lanes + masks.time_offset)) & masks.sign:
        return None  # a negative time, or one at or beyond the limit (or not a number): look closer
    return lanes


def lanes_not_older(newer: int | None, older: int | None, count: int) -> bool:
    """True when every time of ``newer`` is at least the one in the same lane of ``older`` (both from
    :func:`time_lanes` of ``count`` times); False means "look closer". Each lane holds a number below 2**63, so
    ``newer + 2**63 - older`` keeps the lane's top bit set exactly when the newer time is not smaller, and never
    borrows from the next lane."""
    if newer is None or older is None:
        return False
    sign = _lane_masks(count).sign
    return (newer + sign - older) & sign == sign


def _supersedes(
    times: array, lanes: int | None, same_time: float | None, held: tuple[array, array, array, int | None, float | None]
) -> bool:
    """Whether a block of ``times`` (its ``lanes`` or ``same_time`` where known) has every time at least the one
    at the same position of the ``held`` block of the same layout; False may also mean "could not tell"."""
    held_time = held[4]
    if same_time is not None and held_time is not None:
        return same_time >= held_time
    newer = lanes if lanes is not None else time_lanes(times)
    older = held[3] if held[3] is not None else time_lanes(held[1])
    return lanes_not_older(newer, older, len(times))


class _History:
    """Time-ordered points of one main series; old points leave from the front."""

    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times = array("d")
        self.values = array("d")

    def add(self, when: float, value: float, window: float, cap: int) -> None:
        times = self.times
        if times and when <= times[-1]:
            return  # out of order or a repeat: a chart wants one line forward
        drop = 0
        horizon = when - window
        while drop < len(times) and (times[drop] < horizon or len(times) - drop >= cap):
            drop += 1
        if drop:
            del times[:drop]
            del self.values[:drop]
        times.append(when)
        self.values.append(value)


class _Host:
    __slots__ = ("gids", "times", "values", "layouts", "history", "cpu_slots", "dropped", "held")

    def __init__(self) -> None:
        self.gids = array("I")
        self.times = array("d")
        self.values = array("d")
        self.layouts: dict[tuple[int, int], tuple[array, tuple[tuple[int, int], ...], int]] = {}
        self.history: dict[int, _History] = {}
        self.cpu_slots: tuple[int, ...] | None = None
        self.dropped = 0
        self.held: tuple[array, array, array, int | None, float | None] | None = None
        """The last block, not stored yet: (its layout's slots, times, values, :func:`time_lanes` of its times or
        None, its :func:`~fructosa.taps.common_time` or None); see the module docstring."""

    def hold(self, slots: array, times: array, values: array, lanes: int | None) -> None:
        """Take a block's values (positions → ``slots``), storing the one held before unless this one supersedes it.

        ``lanes``: the block's :func:`time_lanes` when the block check worked them out already
        (:attr:`~fructosa.wire.blocks.Block.time_lanes`), else None (converted here if need be). A block with
        one time throughout keeps that time instead (its lanes are worked out again in the rare case that the
        next block has several times)."""
        held = self.held
        same_time = common_time(times)
        if same_time is not None:
            lanes = None  # not needed while the blocks have one time each; 8 bytes a time less to keep
        if held is not None and not (held[0] is slots and _supersedes(times, lanes, same_time, held)):
            self.store_held()
        self.held = (slots, times, values, lanes, same_time)

    def store_held(self) -> None:
        """Store the held block: a value goes in unless its slot already has a newer one."""
        held = self.held
        if held is None:
            return
        self.held = None
        slots, times, values, _, _ = held
        newest_times, newest_values = self.times, self.values
        for slot, when, value in zip(slots, times, values, strict=True):
            if slot >= 0 and when >= newest_times[slot]:
                newest_times[slot] = when
                newest_values[slot] = value

    def slot(self, gid: int) -> int:
        index = bisect_left(self.gids, gid)
        return index if index < len(self.gids) and self.gids[index] == gid else _NO_SLOT

    def layout_changed(self) -> None:
        """Its slots moved: the cached block layouts and CPU slots no longer hold."""
        self.layouts.clear()
        self.cpu_slots = None


class SeriesNames:
    """The relative paths (``CPUPercent.3``) of every host, interned once for the whole cluster.

    Each name becomes a small integer (*gid*) that the hosts' arrays hold instead of a string; a name is
    counted by the hosts holding it and its gid reused once none does, so that series which stopped (finished
    Slurm jobs) do not make the table grow forever. Whether a name is a main series (history kept) is worked
    out once, when it is interned.
    """

    __slots__ = ("main", "gid_of", "names", "refs", "is_main", "free")

    def __init__(self, main: re.Pattern[str]) -> None:
        self.main = main
        self.gid_of: dict[str, int] = {}
        self.names: list[str | None] = []
        """The name of every gid; None for a free one."""
        self.refs = array("I")
        self.is_main = bytearray()
        self.free: list[int] = []

    def __len__(self) -> int:
        return len(self.gid_of)

    def intern(self, name: str) -> int:
        """The gid of ``name``, given one if it had none (not counted as held yet: see :meth:`hold`)."""
        gid = self.gid_of.get(name)
        if gid is not None:
            return gid
        if self.free:
            gid = self.free.pop()
            self.names[gid] = name
            self.is_main[gid] = bool(self.main.fullmatch(name))
        else:
            gid = len(self.names)
            self.names.append(name)
            self.refs.append(0)
            self.is_main.append(bool(self.main.fullmatch(name)))
        self.gid_of[name] = gid
        return gid

    def hold(self, gid: int) -> None:
        """One more host holds ``gid``."""
        self.refs[gid] += 1

    def release(self, gid: int) -> None:
        """One host less holds ``gid``; the last one frees it."""
        self.refs[gid] -= 1
        if self.refs[gid] == 0:
            del self.gid_of[self.names[gid]]
            self.names[gid] = None
            self.free.append(gid)


class LatestValues(Tap):
    """The newest value per series and per host, plus main-series history; see the module docstring.

    The interned names are a :class:`SeriesNames`; each host's arrays, held block and cached layouts a
    ``_Host``. Not thread-safe: lmaster calls it from its event loop only.
    """

    name = "latest"

    def __init__(self, limits: LatestLimits | None = None, main_series: Iterable[str] = DEFAULT_MAIN_SERIES):
        self.limits = limits or LatestLimits()
        self._hosts: dict[str, _Host] = {}
        self._series = SeriesNames(pattern_regex(main_series))
        self.dropped_hosts = 0
        """Datapoints refused because ``max_hosts`` hosts were already known."""
        self.dropped_series = 0
        """Datapoints refused because their host already had ``max_series_per_host`` series."""
        self.malformed_blocks = 0
        """Blocks whose path count did not match their values (ignored: a tap never raises)."""

    # -- feeding -------------------------------------------------------------------------------------

    def observe(self, block: Block, host: str | None) -> None:
        """Remember the block's datapoints; ``host`` is the agent it came from (a hint for the fast path),
        None for lmaster's own datapoints."""
        count = len(block)
        if not count:
            return
        paths = block.paths
        entry = self._hosts.get(host) if host is not None else None
        layout = entry.layouts.get((hash(paths), len(paths))) if entry is not None else None
        if layout is not None and len(layout[0]) == count:  # a layout of this host's: its paths are below it
            self._store(entry, layout, block.times, block.values, block.time_lanes)
            return
        prefix = f"{host}.".encode("ascii", "replace")
        if host is not None and paths.startswith(prefix) and paths.count(b"\n" + prefix) == count - 1:
            self._observe_one_host(host, paths, len(prefix), block)
        else:  # a relay's block: several hosts, grouped by each path's first component
            paths_list = paths.decode("ascii", "replace").split("\n")
            if len(paths_list) != count or len(block.values) != count:
                self.malformed_blocks += 1
                return
            for path, when, value in zip(paths_list, block.times, block.values, strict=True):
                owner, dot, relative = path.partition(".")
                if dot and relative:
                    self._store_one(owner, relative, when, value)

    def _observe_one_host(self, host: str, paths: bytes, prefix_length: int, block: Block) -> None:
        times, values = block.times, block.values
        entry = self._hosts.get(host) or self._add_host(host)
        if entry is None:
            self.dropped_hosts += len(times)
            return
        key = (hash(paths), len(paths))
        layout = entry.layouts.get(key)
        if layout is None or len(layout[0]) != len(times):  # new layout (or, in theory, a hash collision)
            relatives = [path[prefix_length:] for path in paths.decode("ascii", "replace").split("\n")]
            if len(relatives) != len(times) or len(values) != len(times):
                self.malformed_blocks += 1  # blocks are checked before taps see them: never expected
                return
            layout = self._layout(entry, relatives)
            if len(entry.layouts) >= _LAYOUTS_PER_HOST:
                del entry.layouts[next(iter(entry.layouts))]
            entry.layouts[key] = layout
        self._store(entry, layout, times, values, block.time_lanes)

    def _store(self, entry: _Host, layout: tuple[array, tuple[tuple[int, int], ...], int], times: array,
               values: array, lanes: int | None) -> None:  # fmt: skip
        slots, main, dropped = layout
        entry.hold(slots, times, values, lanes)
        if main:
            limits = self.limits
            for position, gid in main:
                self._history(entry, gid).add(
                    times[position], values[position], limits.history_seconds, limits.history_points
                )
        if dropped:
            entry.dropped += dropped
            self.dropped_series += dropped

    def _store_one(self, host: str, relative: str, when: float, value: float) -> None:
        entry = self._hosts.get(host) or self._add_host(host)
        if entry is None:
            self.dropped_hosts += 1
            return
        entry.store_held()  # in arrival order
        gid_of = self._series.gid_of
        gid = gid_of.get(relative)
        slot = _NO_SLOT if gid is None else entry.slot(gid)
        if slot == _NO_SLOT:
            self._insert(entry, [relative])
            gid = gid_of.get(relative)
            slot = _NO_SLOT if gid is None else entry.slot(gid)
            if slot == _NO_SLOT:
                entry.dropped += 1
                self.dropped_series += 1
                return
        if when >= entry.times[slot]:
            entry.times[slot] = when
            entry.values[slot] = value
        if self._series.is_main[gid]:
            self._history(entry, gid).add(when, value, self.limits.history_seconds, self.limits.history_points)

    def _add_host(self, host: str) -> _Host | None:
        if len(self._hosts) >= self.limits.max_hosts:
            return None
        entry = self._hosts[host] = _Host()
        return entry

    def _layout(self, entry: _Host, relatives: list[str]) -> tuple[array, tuple[tuple[int, int], ...], int]:
        """Slots for the positions of a block (``-1``: refused), its main series and the refused count."""
        gid_of = self._series.gid_of
        missing = [
            name for name in dict.fromkeys(relatives) if (gid := gid_of.get(name)) is None or entry.slot(gid) < 0
        ]
        if missing:
            self._insert(entry, missing)
        slots = array("i")
        main: list[tuple[int, int]] = []
        is_main = self._series.is_main
        for position, name in enumerate(relatives):
            gid = gid_of.get(name)
            slot = _NO_SLOT if gid is None else entry.slot(gid)
            slots.append(slot)
            if slot >= 0 and is_main[gid]:
                main.append((position, gid))
        return slots, tuple(main), slots.count(_NO_SLOT)

    def _insert(self, entry: _Host, names: list[str]) -> None:
        """Give ``entry`` series for ``names`` (up to its cap); slots move, so cached layouts go."""
        room = self.limits.max_series_per_host - len(entry.gids)
        new = sorted({self._series.intern(name) for name in names[: max(room, 0)]})
        if not new:
            return
        entry.store_held()  # its slots are about to move
        gids, times, values = entry.gids, entry.times, entry.values
        merged = sorted(set(gids).union(new))
        old = {gid: index for index, gid in enumerate(gids)}
        entry.gids = array("I", merged)
        entry.times = array("d", [times[old[gid]] if gid in old else -1.0 for gid in merged])
        entry.values = array("d", [values[old[gid]] if gid in old else 0.0 for gid in merged])
        for gid in new:
            if gid not in old:
                self._series.hold(gid)
        entry.layout_changed()

    def _history(self, entry: _Host, gid: int) -> _History:
        history = entry.history.get(gid)
        if history is None:
            history = _History()
            if len(entry.history) < self.limits.max_history_series:
                entry.history[gid] = history  # beyond the cap: recorded into a throw-away object
        return history

    # -- upkeep --------------------------------------------------------------------------------------

    def forget(self, host: str) -> bool:
        """Drop everything about ``host`` (decommissioned, renamed); False if it was unknown."""
        entry = self._hosts.pop(host, None)
        if entry is None:
            return False
        for gid in entry.gids:
            self._series.release(gid)
        return True

    def prune(self, now: float) -> int:
        """Forget series without a value for ``series_ttl`` seconds (and hosts left empty); how many."""
        horizon = now - self.limits.series_ttl
        removed = 0
        for host in list(self._hosts):
            entry = self._hosts[host]
            entry.store_held()
            if entry.gids and min(entry.times) >= horizon:
                continue
            keep = [index for index, when in enumerate(entry.times) if when >= horizon]
            for index, gid in enumerate(entry.gids):
                if entry.times[index] < horizon:
                    entry.history.pop(gid, None)
                    self._series.release(gid)
            removed += len(entry.gids) - len(keep)
            entry.gids = array("I", [entry.gids[index] for index in keep])
            entry.times = array("d", [entry.times[index] for index in keep])
            entry.values = array("d", [entry.values[index] for index in keep])
            entry.layout_changed()
            if not keep:
                del self._hosts[host]
        return removed

    # -- reading -------------------------------------------------------------------------------------

    def hosts(self) -> list[str]:
        return sorted(self._hosts)

    def __contains__(self, host: object) -> bool:
        return host in self._hosts

    def latest(self, host: str) -> dict[str, tuple[float, float]] | None:
        """``{graphite path: (timestamp, value)}`` of one host; None for an unknown host."""
        entry = self._hosts.get(host)
        if entry is None:
            return None
        entry.store_held()
        names = self._series.names
        return {
            f"{host}.{names[gid]}": (when, value)
            for gid, when, value in zip(entry.gids, entry.times, entry.values, strict=True)
            if when >= 0
        }

    def get(self, host: str, relative: str) -> tuple[float, float] | None:
        """The newest ``(timestamp, value)`` of ``HOST.relative``, or None."""
        entry = self._hosts.get(host)
        gid = self._series.gid_of.get(relative)
        if entry is None or gid is None:
            return None
        entry.store_held()
        slot = entry.slot(gid)
        if slot < 0 or entry.times[slot] < 0:
            return None
        return entry.times[slot], entry.values[slot]

    def cpu_percent(self, host: str) -> float | None:
        """``CPUPercent.total`` if the host sends it, else the mean of its per-CPU ``CPUPercent.N``."""
        total = self.get(host, "CPUPercent.total")
        if total is not None:
            return total[1]
        entry = self._hosts.get(host)
        if entry is None:
            return None
        entry.store_held()
        if entry.cpu_slots is None:
            names = self._series.names
            entry.cpu_slots = tuple(slot for slot, gid in enumerate(entry.gids) if _PER_CPU.fullmatch(names[gid] or ""))
        readings = [entry.values[slot] for slot in entry.cpu_slots if entry.times[slot] >= 0]
        return sum(readings) / len(readings) if readings else None

    def history(self, host: str, pattern: str | None = None) -> dict[str, tuple[list[float], list[float]]] | None:
        """``{graphite path: (times, values)}`` of the host's main series matching a glob; None: unknown host."""
        entry = self._hosts.get(host)
        if entry is None:
            return None
        wanted = pattern_regex([pattern]) if pattern else None
        names = self._series.names
        result = {}
        for gid, points in sorted(entry.history.items(), key=lambda item: names[item[0]] or ""):
            name = names[gid] or ""
            if wanted is None or wanted.fullmatch(name):
                result[f"{host}.{name}"] = (points.times.tolist(), points.values.tolist())
        return result

    def store_held_in_slices(self, hosts: Iterable[str] | None = None) -> Iterator[None]:
        """Store the blocks held for ``hosts`` (default: all), pausing (one ``yield``) after about
        :data:`SLICE_VALUES` values, so that an event loop can serve others between slices.

        Each host's newest block waits, unstored, until something reads it. A reader of every host
        (``/metrics`` of 5,000 hosts × 300 series) would otherwise store them all in one go: a quarter of a
        second in which the loop serves nobody. Run this first, awaiting between slices; the
        :meth:`snapshot` after it then finds only what arrived meanwhile."""
        done = 0
        for host in list(self._hosts) if hosts is None else list(hosts):
            entry = self._hosts.get(host)  # a host may be forgotten between slices
            if entry is None or entry.held is None:
                continue
            done += len(entry.held[1])
            entry.store_held()
            if done >= SLICE_VALUES:
                done = 0
                yield

    def snapshot(
        self, hosts: Iterable[str] | None = None
    ) -> tuple[list[str | None], list[tuple[str, array, array, array]]]:
        """Copies for a reader in another thread (``/metrics``): the interned names (index: gid) and, per host,
        ``(host, gids, times, values)``; all hosts, or those of ``hosts`` that are known. A few ms for 5,000 hosts."""
        chosen = sorted(self._hosts) if hosts is None else [host for host in hosts if host in self._hosts]
        copies = []
        for host in chosen:
            entry = self._hosts[host]
            entry.store_held()
            copies.append((host, array("I", entry.gids), array("d", entry.times), array("d", entry.values)))
        return list(self._series.names), copies

    def dropped(self, host: str) -> int:
        entry = self._hosts.get(host)
        return entry.dropped if entry else 0

    def stats(self) -> dict[str, int]:
        """Sizes and drop counters, for lmaster's self-monitoring."""
        return {
            "hosts": len(self._hosts),
            "series": sum(len(entry.gids) for entry in self._hosts.values()),
            "names": len(self._series),
            "history_points": sum(len(h.times) for e in self._hosts.values() for h in e.history.values()),
            "dropped_hosts": self.dropped_hosts,
            "dropped_series": self.dropped_series,
            "malformed_blocks": self.malformed_blocks,
        }

    def __iter__(self) -> Iterator[str]:
        return iter(self.hosts())
