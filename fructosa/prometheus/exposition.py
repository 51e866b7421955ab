"""``/metrics``: every series of the latest-values store in Prometheus' text format (or OpenMetrics).

Names and labels follow :mod:`.naming`. What is left out:

* hosts silent for ``staleness`` seconds (their newest value is older): a
  node that died drops out of the scrape instead of showing frozen values;
* ``?host=PATTERN`` (a shell glob on host names) limits the scrape to some hosts;
* past ``max_series`` series, the rest of a scrape, counted in
  ``fructosa_lmaster_metrics_series_dropped_total``, so a runaway cardinality
  (thousands of job or process series per node) cannot make lmaster build a
  response Prometheus would refuse anyway.

Speed is the design constraint: 5,000 hosts × 300 series is 1.5 million
lines. prometheus-client's ``generate_latest`` writes about 70,000 lines a
second here (a Python object per sample, label escaping per line): 20 s. So
the store's series are written by :func:`render`, a direct writer of the same
format (family headers as prometheus-client writes them, the label suffix of
each relative path escaped once for all hosts), and tests check it against
``generate_latest`` of :class:`LatestCollector` (the same series as metric
families). lmaster's own few self-metrics go through prometheus-client itself.

The event loop only copies the store (:meth:`LatestValues.snapshot`, a few
ms); :func:`render` runs in a worker thread and yields the body in chunks
(gzip-compressed there when the scraper accepts it: zlib releases the GIL),
which the handler streams (:mod:`fructosa.http.metrics`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from ..taps.latest import LatestValues
from .naming import COUNTER, UNTYPED, Series, lmaster_series, relative_series

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
CHUNK_BYTES = 1 << 20
"""The body is handed to the HTTP writer in pieces of about this size."""
MAX_HOST_PATTERN = 200
_HOST_PATTERN = re.compile(r"[A-Za-z0-9_.*?\[\]!-]+")


@dataclass(frozen=True)
class MetricsSettings:
    """``/metrics`` knobs (the ``[http]`` section's ``metrics staleness`` and ``metrics max series``)."""

    staleness: float = 300.0
    """Hosts whose newest value is older than this many seconds are left out."""
    max_series: int = 2_000_000
    """Series in one scrape at most; the rest are left out and counted."""

    def __post_init__(self) -> None:
        if not self.staleness > 0:
            raise ValueError(f"metrics staleness must be positive, not {self.staleness}")
        if self.max_series < 1:
            raise ValueError(f"metrics max series must be at least 1, not {self.max_series}")


def host_pattern_problem(pattern: str) -> str | None:
    """Why ``?host=`` cannot be used, or None: a shell glob of host-name characters, ``* ? [ ] !``."""
    if not 0 < len(pattern) <= MAX_HOST_PATTERN:
        return f"a host pattern has 1 to {MAX_HOST_PATTERN} characters"
    if not _HOST_PATTERN.fullmatch(pattern):
        return "a host pattern is host-name characters and the globs * ? [...]"
    return None


def wants_openmetrics(accept: str | None) -> bool:
    """True when the scraper's ``Accept`` names OpenMetrics (Prometheus does when it may)."""
    return any(part.split(";")[0].strip() == "application/openmetrics-text" for part in (accept or "").split(","))


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if openmetrics else text


def family_header(name: str, kind: str, help_text: str, openmetrics: bool) -> str:
    """``# HELP`` and ``# TYPE`` lines as prometheus-client writes them in either format."""
    if openmetrics:
        return f"# HELP {name} {_escape_help(help_text, True)}\n# TYPE {name} {kind}\n"
    exposed = f"{name}_total" if kind == COUNTER else name
    text_kind = "untyped" if kind == UNTYPED else kind
    return f"# HELP {exposed} {_escape_help(help_text, False)}\n# TYPE {exposed} {text_kind}\n"


@dataclass
class Snapshot:
    """What one scrape writes, copied on the event loop (see :meth:`LatestValues.snapshot`)."""

    names: list[str | None]
    hosts: list[tuple[str, Any, Any, Any]]
    now: float
    self_metrics: dict[str, float]


class _Families:
    """Per interned name (gid): its family's index and the line's name and label suffix; cached across scrapes.

    Keyed by the relative path's text, so a gid reused for another name after
    :meth:`LatestValues.prune` gets a fresh entry.
    """

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        """Exposed name (``_total`` included) → family: one family per name, whatever else differs, as a
        second ``# TYPE`` line for a name makes Prometheus refuse the whole scrape (an exporter's metric
        named like one of ours, two unknown sensors that sanitize alike)."""
        self.families: list[tuple[str, str, str]] = []
        self.by_name: dict[str, tuple[int, str, str] | None] = {}

    def entry(self, relative: str) -> tuple[int, str, str] | None:
        found = self.by_name.get(relative, False)
        if found is not False:
            return found  # type: ignore[return-value]
        series = relative_series(relative)
        if series is None:
            entry = None
        else:
            name, kind, help_text, labels = series
            exposed = f"{name}_total" if kind == COUNTER else name
            family = self.index.get(exposed)
            if family is None and kind != COUNTER:
                family = self.index.get(f"{name}_total")  # an untyped x_total next to our counter x
            if family is None:
                family = self.index[exposed] = len(self.families)
                self.families.append((name, kind, help_text))
                if kind == COUNTER:
                    self.index.setdefault(name, family)  # OpenMetrics names the counter family x: keep x for it
            suffix = "".join(f',{label}="{_escape_label(value)}"' for label, value in labels) + "} "
            entry = (family, exposed, suffix)
        if len(self.by_name) < 1 << 20:
            self.by_name[relative] = entry
        return entry


class MetricsExposition:
    """``/metrics`` for one store: take a :meth:`snapshot` on the loop, :meth:`render` it in a thread.

    ``self_metrics`` returns lmaster's own health (``Reporter.self_metrics``'s
    keys and values), exposed as ``fructosa_lmaster_*``.
    """

    def __init__(
        self,
        store: LatestValues,
        settings: MetricsSettings | None = None,
        self_metrics: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or MetricsSettings()
        self.self_metrics = self_metrics
        self.series_dropped = 0
        """Series left out by the ``max_series`` cap, over all scrapes."""
        self.scrapes = 0
        self._families = _Families()
        self._lock = threading.Lock()
        """Two scrapes at once (an HA pair of Prometheus servers) build in two threads: the name cache and the
        counters are shared."""

    def snapshot(self, now: float, host_pattern: str | None = None) -> Snapshot:
        """Copies of what to write (cheap on the event loop once :meth:`settle` ran); ``host_pattern`` see
        :func:`host_pattern_problem`."""
        names, copies = self.store.snapshot(self._hosts(host_pattern))
        own = dict(self.self_metrics()) if self.self_metrics is not None else {}
        return Snapshot(names, copies, now, own)

    async def settle(self, host_pattern: str | None = None) -> None:
        """Store the latest values still held for the hosts a scrape will copy, a slice at a time with the
        event loop free between slices (:meth:`~fructosa.taps.latest.LatestValues.store_held_in_slices`)."""
        for _ in self.store.store_held_in_slices(self._hosts(host_pattern)):
            await asyncio.sleep(0)

    def _hosts(self, host_pattern: str | None) -> list[str] | None:
        """The hosts matching ``host_pattern``; None (all hosts) without one."""
        return None if host_pattern is None else fnmatch.filter(self.store.hosts(), host_pattern)

    def render(self, snapshot: Snapshot, openmetrics: bool = False, gzip: bool = False) -> Iterator[bytes]:
        """The body in chunks of about :data:`CHUNK_BYTES` (run it in a worker thread)."""
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31) if gzip else None
        for chunk in self._text_chunks(snapshot, openmetrics):
            data = chunk.encode("utf-8")
            if compressor is not None:
                data = compressor.compress(data)
            if data:
                yield data
        if compressor is not None:
            yield compressor.flush()

    def _text_chunks(self, snapshot: Snapshot, openmetrics: bool) -> Iterator[str]:
        with self._lock:
            self.scrapes += 1
        lines_of, families = self._lines(snapshot)
        pending: list[str] = []
        size = 0
        for family, lines in enumerate(lines_of):
            if not lines:
                continue
            name, kind, help_text = families[family]
            pending.append(family_header(name, kind, help_text, openmetrics))
            pending.append("".join(lines))
            size += len(pending[-1])
            lines_of[family] = []  # the lines can go as soon as they are joined
            if size >= CHUNK_BYTES:
                yield "".join(pending)
                pending, size = [], 0
        own = _own_text(self._own_families(snapshot.self_metrics), openmetrics)
        yield "".join(pending) + own + ("# EOF\n" if openmetrics else "")

    def _lines(self, snapshot: Snapshot) -> tuple[list[list[str]], list[tuple[str, str, str]]]:
        """Every fresh host's lines, grouped by family (Prometheus wants a family's lines together)."""
        names, cache = snapshot.names, self._families
        with self._lock:
            entries = [cache.entry(name) if name is not None else None for name in names]
            families = list(cache.families)
        lines_of: list[list[str]] = [[] for _ in families]
        horizon = snapshot.now - self.settings.staleness
        room = self.settings.max_series
        dropped = 0
        for host, gids, times, values in snapshot.hosts:
            if not times or max(times) < horizon:
                continue
            prefix = f'{{host="{_escape_label(host)}"'
            for gid, when, value in zip(gids, times, values, strict=True):
                if when < 0:
                    continue
                entry = entries[gid]
                if entry is None:
                    continue
                if room <= 0:
                    dropped += 1
                    continue
                room -= 1
                family, exposed, suffix = entry
                lines_of[family].append(f"{exposed}{prefix}{suffix}{value!r}\n")
        with self._lock:
            self.series_dropped += dropped
        return lines_of, families

    def _own_families(self, own: dict[str, float]) -> list[Metric]:
        """lmaster's self-metrics and this exposition's own counters, as prometheus-client families."""
        metrics = dict(own)
        grouped: dict[tuple[str, str, str], list[Series]] = {}
        values: dict[Series, float] = {}
        for key, value in sorted(metrics.items()):
            series = lmaster_series(key)
            grouped.setdefault(series.family, []).append(series)
            values[series] = value
        result: list[Metric] = [
            CounterMetricFamily(
                "fructosa_lmaster_metrics_series_dropped",
                "series left out of /metrics scrapes by the metrics max series cap",
                value=self.series_dropped,
            ),
            CounterMetricFamily("fructosa_lmaster_metrics_scrapes", "/metrics responses built", value=self.scrapes),
        ]
        for (name, kind, help_text), members in grouped.items():
            result.append(metric_family(name, kind, help_text, [(s.labels, values[s]) for s in members]))
        return result


def metric_family(
    name: str, kind: str, help_text: str, samples: list[tuple[tuple[tuple[str, str], ...], float]]
) -> Metric:
    """A prometheus-client metric family of one type holding ``(labels, value)`` samples (label sets may differ)."""
    cls = CounterMetricFamily if kind == COUNTER else GaugeMetricFamily if kind != UNTYPED else UnknownMetricFamily
    family = cls(name, help_text, labels=[])
    sample_name = f"{name}_total" if kind == COUNTER else name
    family.samples.extend(Sample(sample_name, dict(labels), value) for labels, value in samples)
    return family


class _FixedCollector(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _own_text(families: list[Metric], openmetrics: bool) -> str:
    collector = _FixedCollector(families)
    if openmetrics:
        return generate_openmetrics(collector).decode("utf-8").removesuffix("# EOF\n")
    return generate_latest(collector).decode("utf-8")


class LatestCollector(Collector):
    """The store's series as prometheus-client metric families: the reference :func:`render` is tested against.

    Too slow for a large cluster (see the module docstring), exact for a small one.
    """

    def __init__(self, exposition: MetricsExposition, snapshot: Snapshot) -> None:
        self.exposition, self.snapshot = exposition, snapshot

    def collect(self) -> Iterator[Metric]:
        horizon = self.snapshot.now - self.exposition.settings.staleness
        grouped: dict[tuple[str, str, str], list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        for host, gids, times, values in self.snapshot.hosts:
            if not times or max(times) < horizon:
                continue
            for gid, when, value in zip(gids, times, values, strict=True):
                name = self.snapshot.names[gid]
                found = relative_series(name) if name is not None and when >= 0 else None
                if found is not None:
                    family_name, kind, help_text, labels = found
                    grouped.setdefault((family_name, kind, help_text), []).append(((("host", host), *labels), value))
        for (name, kind, help_text), samples in grouped.items():
            yield metric_family(name, kind, help_text, samples)
