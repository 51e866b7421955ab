"""Samples → Graphite paths: the one flattening function of FrUCToSA.

A sample is ``{"host": str, "sensor": str, "time": float, "value": V}`` where
``V`` is a number, a bool, a string, ``None``, or a dict/list nesting those.
Every numeric leaf becomes one datapoint whose path is the host, the sensor
and the keys leading to the leaf::

    {"host": "node01", "sensor": "CPUPercent", "value": {0: 3.5, 1: 7.0}}
    -> node01.CPUPercent.0 3.5, node01.CPUPercent.1 7.0
    {"host": "node01", "sensor": "BootTime", "value": 1.7e9}
    -> node01.BootTime 1.7e9

Rules (documented in README, relied on by dashboards):

* flat dicts keep FrUCToSA 0.3.2's paths exactly: ``HOST.SENSOR.KEY``;
* nested dicts add one component per level; list items use their index;
* booleans become 0/1; strings, bytes and ``None`` are not metrics and are
  skipped; NaN and infinities are skipped (carbon would store garbage);
* every component is sanitized to ``[A-Za-z0-9_-]+`` (anything else becomes
  ``_``, leading/trailing ``_`` trimmed, empty becomes ``_``), and two keys of
  one dict that sanitize alike are told apart with ``_2``, ``_3``… in sorted
  key order, so no datapoint silently overwrites another.

The master runs this on bytes from the network, so the walk is bounded in
depth and in values visited, per sample (:data:`MAX_LEAVES_PER_SAMPLE`) and,
with a :class:`FlattenBudget` shared by all samples of a frame, per frame: a
hostile batch cannot make it recurse forever or expand a shared-reference
pickle (one sample referenced hundreds of times) into millions of paths.
The master's decoder also counts a batch's values, shared references
expanded, before flattening starts (``fructosa.wire.protocol.count_values``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

Datapoint = tuple[str, tuple[float, float]]

MAX_DEPTH = 8
"""Nesting levels below the sensor; psutil shapes need at most three."""

MAX_TIMESTAMP = 2**32
"""whisper stores timestamps as unsigned 32-bit seconds."""

MAX_LEAVES_PER_SAMPLE = 10_000
"""Values visited per sample; a 1,000-CPU node with per-CPU times stays below."""

MAX_VALUES_PER_BATCH = 200_000
"""Values a :class:`FlattenBudget` lets one batch (one frame) visit: the same
bound as the wire decoder's ``MAX_VALUES_PER_FRAME``, above what any honest
1 MiB frame holds (~95,000; a ``D`` frame carries at most ~58,000 datapoints)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_component_cache: dict[object, str] = {}


class SampleError(ValueError):
    """A sample that cannot be turned into datapoints (malformed or hostile)."""


MAX_COMPONENT = 200
"""Characters in one path component: whisper makes each a file or directory
name, and file systems stop at 255 bytes."""


def sanitize_component(key: object) -> str:
    """One path component from a dict key, host or sensor name: ``[A-Za-z0-9_-]+``.

    Raises :class:`SampleError` for keys that cannot be a component (too long
    once written out, or not writable as text at all).
    """
    cached = _component_cache.get(key)
    if cached is not None and type(key) in (str, int):
        return cached
    try:
        text = str(key) if not isinstance(key, bytes) else key.decode("utf-8", "replace")
    except (ValueError, RecursionError):  # e.g. an int of more than 4300 digits
        raise SampleError(f"a {type(key).__name__} key that cannot be written as text") from None
    if len(text) > MAX_COMPONENT:
        raise SampleError(f"path component of {len(text)} characters (at most {MAX_COMPONENT})")
    component = _UNSAFE.sub("_", text).strip("_") or "_"
    if type(key) in (str, int) and len(_component_cache) < 65_536:
        _component_cache[key] = component
    return component


def short_hostname(name: str) -> str:
    """The agent's name in paths: the hostname before the first dot, sanitized."""
    return sanitize_component(name.split(".", 1)[0])


def is_valid_path(path: str) -> bool:
    """True for a dotted path of non-empty sanitized components."""
    return all(part and not _UNSAFE.search(part) for part in path.split("."))


def _components(mapping: dict) -> Iterable[tuple[str, object]]:
    """(component, value) pairs of a dict with collisions resolved deterministically."""
    if len(mapping) > MAX_LEAVES_PER_SAMPLE:
        raise SampleError(f"more than {MAX_LEAVES_PER_SAMPLE} values in one sample")
    pairs = [(sanitize_component(key), value) for key, value in mapping.items()]
    if len({component for component, _ in pairs}) == len(pairs):
        return pairs
    ordered = sorted(mapping.items(), key=lambda item: str(item[0]))
    taken: set[str] = set()
    next_suffix: dict[str, int] = {}
    resolved = []
    for key, value in ordered:
        base = sanitize_component(key)
        component = base
        suffix = next_suffix.get(base, 1)
        while component in taken:  # amortized O(1): each base resumes where it stopped
            suffix += 1
            component = f"{base}_{suffix}"
        next_suffix[base] = suffix
        taken.add(component)
        resolved.append((component, value))
    return resolved


class FlattenBudget:
    """Values that the samples of one batch may still make flattening visit.

    Pass one to :func:`sample_to_datapoints` for every sample of a batch: the
    bound then holds for the batch as a whole, counted as the walk goes, so
    a batch that references one large sample many times is stopped after
    ``values`` visits instead of building every copy of its paths.
    """

    __slots__ = ("left", "limit")

    def __init__(self, values: int = MAX_VALUES_PER_BATCH) -> None:
        self.limit = values
        self.left = values


def flatten_value(
    prefix: str, timestamp: float, value: object, out: list[Datapoint], budget: FlattenBudget | None = None
) -> None:
    """Append the datapoints of ``value`` below ``prefix`` to ``out``.

    Visits at most :data:`MAX_LEAVES_PER_SAMPLE` values, and at most what is
    left in ``budget`` (which is charged for every visit, also on failure).
    """
    allowed = MAX_LEAVES_PER_SAMPLE if budget is None else min(MAX_LEAVES_PER_SAMPLE, budget.left)
    visits = [0]

    def walk(path: str, node: object, depth: int) -> None:
        visits[0] += 1
        if visits[0] > allowed:
            if budget is not None and budget.left < MAX_LEAVES_PER_SAMPLE:
                raise SampleError(f"more than {budget.limit} values in one batch")
            raise SampleError(f"more than {MAX_LEAVES_PER_SAMPLE} values in one sample")
        node_type = type(node)
        if node_type is float or node_type is int:
            try:
                number = float(node)
            except OverflowError:
                return
            if math.isfinite(number):
                out.append((path, (timestamp, number)))
        elif node_type is bool:
            out.append((path, (timestamp, 1.0 if node else 0.0)))
        elif node_type is dict:
            if depth >= MAX_DEPTH:
                raise SampleError(f"value nested deeper than {MAX_DEPTH} levels")
            for component, child in _components(node):
                walk(f"{path}.{component}", child, depth + 1)
        elif node_type is list or node_type is tuple:
            if depth >= MAX_DEPTH:
                raise SampleError(f"value nested deeper than {MAX_DEPTH} levels")
            for index, child in enumerate(node):
                walk(f"{path}.{index}", child, depth + 1)
        # str, bytes, None and anything else: not a metric.

    try:
        walk(prefix, value, 0)
    finally:
        if budget is not None:
            budget.left -= min(visits[0], allowed)


def sample_to_datapoints(
    sample: object, prefix: str | None = None, out: list[Datapoint] | None = None, budget: FlattenBudget | None = None
) -> list[Datapoint]:
    """Datapoints ``(path, (time, value))`` of one sample, optionally below ``prefix``.

    Raises :class:`SampleError` for anything that is not a well-formed sample,
    or once ``budget`` (shared by the samples of one batch) is spent.
    """
    if type(sample) is not dict:
        raise SampleError(f"sample is a {type(sample).__name__}, not a dict")
    try:
        host, sensor, timestamp = sample["host"], sample["sensor"], sample["time"]
    except KeyError as missing:
        raise SampleError(f"sample has no {missing.args[0]!r}") from None
    if type(host) is not str or type(sensor) is not str:
        raise SampleError("sample host and sensor must be strings")
    if type(timestamp) not in (int, float):
        raise SampleError(f"sample time is a {type(timestamp).__name__}, not a number")
    try:
        seconds = float(timestamp)
    except OverflowError:
        seconds = math.inf
    if not 0 <= seconds < MAX_TIMESTAMP:  # also refuses NaN
        raise SampleError(f"sample time {str(seconds)[:30]} is not a Unix time whisper can store")
    path = f"{short_hostname(host)}.{sanitize_component(sensor)}"
    if prefix:
        path = f"{prefix}.{path}"
    if out is None:
        out = []
    first = len(out)
    try:
        flatten_value(path, seconds, sample.get("value"), out, budget)
    except SampleError:
        del out[first:]  # a refused sample contributes nothing
        raise
    return out


# -- query patterns (dashboards) ----------------------------------------------


class Glob(str):
    """A path component that is Graphite query syntax, not a key.

    ``*``, ``[0-9]*``, ``{a,b}`` or a Grafana variable such as ``$host``:
    :func:`metric_pattern` keeps it as it is, where a key would be sanitized.
    """


ANY = Glob("*")
"""Every instance at this level: each NIC, disk, mount point, chip, host…"""


def any_of(*keys: object) -> Glob:
    """``{a,b,…}``: any of these keys, each sanitized as flattening does."""
    components = list(dict.fromkeys(sanitize_component(key) for key in keys))
    if not components:
        raise ValueError("any_of() needs at least one key")
    return Glob(components[0] if len(components) == 1 else "{" + ",".join(components) + "}")


def metric_pattern(host: str, sensor: str, keys: Iterable[object] = (), prefix: str = "") -> str:
    """The Graphite path, or query pattern, of ``sensor``'s value at ``keys`` on ``host``.

    Built with :func:`sample_to_datapoints`' rules (host through
    :func:`short_hostname`, sensor and keys through :func:`sanitize_component`,
    ``prefix`` in front as lmaster puts it), so a dashboard asks for exactly
    the paths the master writes. :class:`Glob` components pass unchanged.
    The ``_2`` suffixes of colliding keys cannot be predicted from one key.
    """
    if prefix and not is_valid_path(prefix):
        raise ValueError(f"{prefix!r} is not a Graphite path prefix")
    parts = [prefix] if prefix else []
    parts.append(host if isinstance(host, Glob) else short_hostname(host))
    parts.append(sanitize_component(sensor))
    parts.extend(key if isinstance(key, Glob) else sanitize_component(key) for key in keys)
    return ".".join(parts)
