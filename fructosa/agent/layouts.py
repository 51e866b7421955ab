"""Sample layouts: a sensor's paths worked out once, its values collected every tick.

A sensor's sample has the same shape tick after tick (the same keys in the
same order at every level, the same kinds of leaves), so flattening it with
:func:`fructosa.graphite_paths.sample_to_datapoints` builds the same path
strings every time, one f-string and two tuples per datapoint. A
:class:`LayoutCache` remembers, per host and sensor, the shape of the last
sample that was flattened and the block paths it gave (already joined and
encoded); the next sample of that shape only has its leaves collected, in
flattening order, into an array of doubles.

Exactness: the shape is verified at every level before a value is taken
(dict keys and their types, sequence lengths, leaf types), and anything the
cached paths cannot express sends the sample back to full flattening: a
different shape, a value that is not finite or too large for a double (full
flattening skips those), colliding keys (resolved in sorted order there).
A layout is only kept when its paths equal those full flattening gave for
the same sample, so the block built from it is the block ``Block.of`` would
build from ``sample_to_datapoints``.

A sample may also come as psutil's own namedtuple (a sensor's
``measure_compact``), which stands for its plain form, the dict of its fields
in order. Its layout is that dict's when every field was a number; the tuple's
type alone then fixes the keys and their order, so a later tuple of the same
type only has its fields' types checked (one C-level pass) before its values
become the block's.
"""

from __future__ import annotations

import math
from array import array

from ..graphite_paths import MAX_DEPTH, MAX_TIMESTAMP, Datapoint, SampleError, sanitize_component, short_hostname
from ..sensors.base import as_plain
from ..wire.blocks import Block

_NUMBERS = frozenset({float, int, bool})
"""Leaf types that are datapoints (bools as 0/1)."""
_CONTAINERS = frozenset({dict, list, tuple})

NUMBER = "number"
"""Layout of a leaf that is a datapoint."""
SKIP = "skip"
"""Layout of a leaf that is not a metric (a string, None…): no datapoint."""

MAX_LAYOUTS = 1024
"""Host and sensor pairs remembered; an agent has a few dozen sensors."""


class ShapeChanged(Exception):
    """The sample does not have the remembered shape: flatten it in full."""


class LayoutCache:
    """The layout of each sensor's last sample; see the module docstring."""

    def __init__(self) -> None:
        self._layouts: dict[tuple[str, str], tuple[object, bytes, int]] = {}
        self._joined: dict[tuple[str, ...], bytes] = {}
        """The joined paths of a tick's run of sensors (host first), as :meth:`tick_block` last built them."""
        self._last_tick: tuple[str, list[tuple[str, type]], bytes] | None = None
        """The last tick whose every sample was a tuple of a type its layout is: the host, each
        sensor and type in order, and their joined paths (the steady state's shortcut in :meth:`tick_block`)."""
        self.hits = 0
        self.misses = 0

    def block(self, host: str, sensor: str, when: float, value: object) -> Block | None:
        """The sample's one-sample block from its remembered layout, or None (flatten
        :func:`plain` of it in full)."""
        entry = self._layouts.get((host, sensor))
        if entry is None or not 0 <= when < MAX_TIMESTAMP:
            self.misses += 1
            return None
        layout, paths, count = entry
        try:
            if type(value) is layout:  # psutil's tuple of a type seen with all-number fields
                if not _NUMBERS.issuperset(map(type, value)):  # type: ignore[call-overload]
                    raise ShapeChanged
                values = array("d", value)  # type: ignore[arg-type]
            else:
                collected: list = []
                _collect(value, layout, collected)
                values = array("d", collected)
        except (ShapeChanged, OverflowError):
            self.misses += 1
            return None
        if not math.isfinite(sum(values)):  # full flattening leaves such values out
            self.misses += 1
            return None
        self.hits += 1
        return Block(paths, array("d", (when,)) * count, values, 1)

    def tick_block(self, host: str, when: float, samples: list[tuple[str, object]]) -> tuple[Block | None, list]:
        """One block of the samples of one tick whose layouts are remembered, and the
        samples left over (their shape changed, no layout yet, a value full flattening
        would leave out: each goes through :meth:`block` and, if need be, full flattening).

        The block holds, in the order of ``samples``, exactly the datapoints their
        one-sample blocks would hold, all at ``when``; its paths for a given run of
        sensors are joined once. One block, one times array and one value array for
        the whole tick instead of one of each per sensor."""
        if not 0 <= when < MAX_TIMESTAMP:
            return None, samples
        last = self._last_tick
        if last is not None and host == last[0] and len(samples) == len(last[1]):
            # The steady state: the samples of the last tick remembered, sensor by sensor and type by type
            # (the same sensors due at every tick, each a psutil tuple). What the loop below does for them,
            # with no look-up of layouts or joined paths (at one tick a second their dicts are not in the
            # CPU's caches), and in this function itself: one function less to fetch per tick.
            steady: list = []
            for (sensor, value), (known, kind) in zip(samples, last[1]):  # noqa: B905  (lengths checked)
                if sensor != known or type(value) is not kind or not _NUMBERS.issuperset(map(type, value)):  # type: ignore[call-overload]
                    break
                steady.extend(value)  # type: ignore[arg-type]
            else:
                try:
                    numbers = array("d", steady)
                except OverflowError:  # an integer beyond a double: the long way finds it
                    pass
                else:
                    if math.isfinite(sum(numbers)):  # else the long way leaves those values out
                        self.hits += len(samples)
                        return Block(last[2], array("d", (when,)) * len(numbers), numbers, len(samples)), []
        layouts = self._layouts
        tuples: list[tuple[str, type]] | None = []
        """Each sample's sensor and type while every one is a tuple of its layout's type."""
        taken: list[str] = []
        collected: list = []
        left: list[tuple[str, object]] = []
        for sample in samples:
            sensor, value = sample
            entry = layouts.get((host, sensor))
            if entry is None:
                left.append(sample)
                continue
            layout = entry[0]
            mark = len(collected)
            try:
                if type(value) is layout:  # psutil's tuple of a type seen with all-number fields
                    if not _NUMBERS.issuperset(map(type, value)):  # type: ignore[call-overload]
                        raise ShapeChanged
                    collected.extend(value)  # type: ignore[arg-type]
                    if tuples is not None:
                        tuples.append((sensor, layout))  # type: ignore[arg-type]
                else:
                    _collect(value, layout, collected)
                    tuples = None
            except ShapeChanged:
                del collected[mark:]
                left.append(sample)
                continue
            taken.append(sensor)
        if not taken:
            return None, left
        try:
            values = array("d", collected)
        except OverflowError:  # an integer beyond a double: find it sample by sample
            return None, samples
        if not math.isfinite(sum(values)):  # full flattening leaves such values out: sample by sample
            return None, samples
        key = (host, *taken)
        paths = self._joined.get(key)
        if paths is None:
            if len(self._joined) >= MAX_LAYOUTS:
                self._joined.clear()
            paths = self._joined[key] = b"\n".join(
                layouts[host, sensor][1] for sensor in taken if layouts[host, sensor][2]
            )
        self.hits += len(taken)
        if tuples is not None and not left:  # another tick (the self-report's) leaves the last one as it was
            self._last_tick = (host, tuples, paths)
        return Block(paths, array("d", (when,)) * len(values), values, len(taken)), left

    def learn(self, host: str, sensor: str, value: object, datapoints: list[Datapoint]) -> Block:
        """The block of a sample (``value``, :func:`plain` of which was fully flattened to
        ``datapoints``); remembers its layout when it can be reused."""
        block = Block.of(datapoints, samples=1)
        paths: list[str] = []
        try:
            layout = _compile(plain(value), f"{short_hostname(host)}.{sanitize_component(sensor)}", paths, 0)
        except (ShapeChanged, SampleError):
            return block
        if _is_record(value) and type(layout) is tuple and layout[3] is None:  # every field a number
            layout = type(value)
        if paths == [path for path, _ in datapoints]:
            if len(self._layouts) >= MAX_LAYOUTS:
                self._layouts.clear()
            self._layouts[host, sensor] = (layout, block.paths, len(paths))
            self._joined.clear()  # joined paths may hold this sensor's earlier ones
            self._last_tick = None
        return block

    def forget(self) -> None:
        self._layouts.clear()
        self._joined.clear()
        self._last_tick = None


def plain(value: object) -> object:
    """The sample ``value`` stands for: the plain form of psutil's namedtuple, other values as they are."""
    return as_plain(value) if _is_record(value) else value


def _is_record(value: object) -> bool:
    return isinstance(value, tuple) and hasattr(value, "_fields")


def _compile(node: object, path: str, paths: list[str], depth: int) -> object:
    """The layout of ``node``, appending the paths of its datapoints in flattening order."""
    kind = type(node)
    if kind in _NUMBERS:
        paths.append(path)
        return NUMBER
    if kind is dict or kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            raise ShapeChanged  # full flattening refuses it
        if kind is dict:
            components = [sanitize_component(key) for key in node]  # type: ignore[union-attr]
            if len(set(components)) != len(components):
                raise ShapeChanged  # colliding keys: flattening orders them differently
            children = node.values()  # type: ignore[union-attr]
        else:
            components = [str(index) for index in range(len(node))]  # type: ignore[arg-type]
            children = node  # type: ignore[assignment]
        layouts = tuple(
            _compile(child, f"{path}.{component}", paths, depth + 1)
            for component, child in zip(components, children, strict=True)
        )
        leaves = None if all(layout is NUMBER for layout in layouts) else layouts
        if kind is dict:
            return (dict, tuple(node), tuple(map(type, node)), leaves)  # type: ignore[arg-type]
        return (kind, len(node), leaves)  # type: ignore[arg-type]
    return SKIP


def _collect(node: object, layout: object, out: list) -> None:
    """Append ``node``'s leaf values to ``out`` in flattening order; ShapeChanged when it is not ``layout``'s shape."""
    if layout is NUMBER:
        if type(node) not in _NUMBERS:
            raise ShapeChanged
        out.append(node)
        return
    kind = type(node)
    if layout is SKIP:
        if kind in _NUMBERS or kind in _CONTAINERS:
            raise ShapeChanged
        return
    if kind is not layout[0]:  # type: ignore[index]
        raise ShapeChanged
    if kind is dict:
        _, keys, key_types, leaves = layout  # type: ignore[misc]
        if tuple(node) != keys or tuple(map(type, node)) != key_types:  # type: ignore[arg-type]
            raise ShapeChanged
        children = node.values()  # type: ignore[union-attr]
    else:
        _, length, leaves = layout  # type: ignore[misc]
        if len(node) != length:  # type: ignore[arg-type]
            raise ShapeChanged
        children = node
    if leaves is None:  # all numbers: one C-level type check
        if not _NUMBERS.issuperset(map(type, children)):
            raise ShapeChanged
        out.extend(children)
    else:
        for child, child_layout in zip(children, leaves):  # noqa: B905  (lengths checked above)
            _collect(child, child_layout, out)
