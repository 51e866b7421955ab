"""Exporter text → FrUCToSA samples: what the agent's ``Prometheus`` sensor and lmaster's scrapes share.

Each sample of the exposition becomes the path ``METRIC.LABEL.VALUE.LABEL.VALUE…``
below ``HOST.Prometheus``, labels sorted by name: prometheus-client's own
Graphite bridge convention, e.g. ``node_cpu_seconds_total{cpu="0",mode="idle"}``
→ ``HOST.Prometheus.node_cpu_seconds_total.cpu.0.mode.idle``. The result is a
nested dict, so :func:`fructosa.graphite_paths.sample_to_datapoints`
sanitizes every component as for all other sensors (``le="0.5"`` → ``0_5``,
``/dev/sda`` → ``dev_sda``; two values that sanitize alike get ``_2``).

Counters and gauges (and untyped, info and stateset samples) are values;
histograms and summaries their ``_sum``, ``_count`` and ``_bucket`` (or
quantile) samples; ``_created`` timestamps are left out. ``include`` and
``exclude`` are shell globs on a sample's name *or* its family's name
(``exclude = *_bucket`` drops every histogram's buckets; ``include = node_cpu_*``
keeps one family); an empty include keeps everything.

Samples with more than :data:`MAX_LABELS` (3) labels are left out and
counted: a sample nests at most 8 levels, and such series are info-style
text (``node_uname_info{machine=…,release=…}``), not measurements.

Bounds, because an exporter is just another program on the node: at most
``max_series`` samples (the rest are cut and counted), and never more than
:data:`~fructosa.graphite_paths.MAX_LEAVES_PER_SAMPLE` values in the tree, the
most one sample may carry. Malformed text is refused whole
(:class:`ExpositionError`): half an exposition would look like series that stopped.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any

from ..graphite_paths import MAX_DEPTH, MAX_LEAVES_PER_SAMPLE

SENSOR = "Prometheus"
DEFAULT_MAX_SERIES = 5000
MAX_BODY_BYTES = 16 << 20
"""Exposition bodies larger than this are refused (node exporter writes about 100 KB)."""
MAX_LABELS = (MAX_DEPTH - 2) // 2
"""Labels a sample may have: the metric and each label's name and value are one level of the sample each,
and a sample nests at most MAX_DEPTH levels. More are info-style series (``node_uname_info``), text not numbers."""
_TIMESTAMP_SAMPLES = ("counter", "histogram", "summary", "gaugehistogram")


class ExpositionError(ValueError):
    """Text that is not a Prometheus exposition (one line, for the log)."""


@dataclass(frozen=True)
class Filter:
    """Which samples to keep: shell globs on the sample's or its family's name."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def from_text(cls, include: str = "", exclude: str = "") -> Filter:
        return cls(tuple(include.replace(",", " ").split()), tuple(exclude.replace(",", " ").split()))

    def keeps(self, sample_name: str, family_name: str) -> bool:
        names = (sample_name, family_name)
        if self.include and not any(fnmatch.fnmatchcase(n, p) for p in self.include for n in names):
            return False
        return not any(fnmatch.fnmatchcase(n, p) for p in self.exclude for n in names)


@dataclass
class Parsed:
    """The samples of one or more expositions as one nested value, and what was left out."""

    tree: dict[str, Any] = field(default_factory=dict)
    series: int = 0
    cut: int = 0
    """Samples beyond ``max_series`` (or the per-sample value bound)."""
    conflicts: int = 0
    """Samples whose path another sample already holds (the same series from two URLs)."""
    too_many_labels: int = 0
    """Samples with more than :data:`MAX_LABELS` labels, left out."""
    nodes: int = 1
    """Values the tree makes flattening visit (dicts and numbers): kept under MAX_LEAVES_PER_SAMPLE."""


def parse_exposition(text: str) -> list[tuple[str, str, str, dict[str, str], float]]:
    """``(family name, type, sample name, labels, value)`` of every sample; ExpositionError when malformed."""
    # prometheus_client's package brings its HTTP server and exposition (~2 MB): lagent imports it when it parses
    from prometheus_client.parser import text_string_to_metric_families

    samples = []
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.append((family.name, family.type, sample.name, dict(sample.labels), float(sample.value)))
    except Exception as error:  # the parser raises ValueError, IndexError, KeyError… on odd input
        raise ExpositionError(f"not a Prometheus exposition: {type(error).__name__}: {str(error)[:200]}") from None
    return samples


def add_samples(
    parsed: Parsed,
    samples: list[tuple[str, str, str, dict[str, str], float]],
    keep: Filter = Filter(),
    max_series: int = DEFAULT_MAX_SERIES,
) -> None:
    """Put ``samples`` into ``parsed.tree`` as ``METRIC → LABEL → VALUE → …``, within the bounds."""
    timestamped = {family for family, kind, *_ in samples if kind in _TIMESTAMP_SAMPLES}
    for family_name, kind, name, labels, value in samples:
        if name.endswith("_created") and (kind in _TIMESTAMP_SAMPLES or name[: -len("_created")] in timestamped):
            continue  # when a counter or histogram started: a timestamp, not a measurement
        if not math.isfinite(value) or not keep.keeps(name, family_name):
            continue
        if len(labels) > MAX_LABELS:
            parsed.too_many_labels += 1
            continue
        keys = [name]
        for label in sorted(labels):
            keys += [label, labels[label]]
        if parsed.series >= max_series:
            parsed.cut += 1
            continue
        _insert(parsed, keys, value)


def _insert(parsed: Parsed, keys: list[str], value: float) -> None:
    """One sample into the tree, unless its path is taken or the value bound would be passed."""
    node = parsed.tree
    depth = 0
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            break
        if not isinstance(child, dict):
            parsed.conflicts += 1  # a number where this sample needs a level
            return
        node, depth = child, depth + 1
    else:
        if keys[-1] in node:
            parsed.conflicts += 1  # the same series twice, or a level where this sample is a number
            return
    new_nodes = len(keys) - depth
    if parsed.nodes + new_nodes > MAX_LEAVES_PER_SAMPLE:
        parsed.cut += 1
        return
    for key in keys[depth:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    parsed.nodes += new_nodes
    parsed.series += 1
