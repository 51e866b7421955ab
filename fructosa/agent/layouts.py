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
"""

from __future__ import annotations

import math
from array import array

from ..graphite_paths import MAX_DEPTH, MAX_TIMESTAMP, Datapoint, SampleError, sanitize_component, short_hostname
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
        self.hits = 0
        self.misses = 0

    def block(self, host: str, sensor: str, when: float, value: object) -> Block | None:
        """The sample's one-sample block from its remembered layout, or None (flatten it in full)."""
        entry = self._layouts.get((host, sensor))
        if entry is None or not 0 <= when < MAX_TIMESTAMP:
            self.misses += 1
            return None
        layout, paths, count = entry
        collected: list = []
        try:
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

    def learn(self, host: str, sensor: str, value: object, datapoints: list[Datapoint]) -> Block:
        """The block of a sample fully flattened to ``datapoints``; remembers its layout when it can be reused."""
        block = Block.of(datapoints, samples=1)
        paths: list[str] = []
        try:
            layout = _compile(value, f"{short_hostname(host)}.{sanitize_component(sensor)}", paths, 0)
        except (ShapeChanged, SampleError):
            return block
        if paths == [path for path, _ in datapoints]:
            if len(self._layouts) >= MAX_LAYOUTS:
                self._layouts.clear()
            self._layouts[host, sensor] = (layout, block.paths, len(paths))
        return block

    def forget(self) -> None:
        self._layouts.clear()


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
