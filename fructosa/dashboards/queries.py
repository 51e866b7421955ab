"""Graphite query expressions built from :class:`~.metrics.Metric` values.

A :class:`Query` is the text Grafana sends to Graphite plus the metrics it
reads, so the tests can tell which sensor a panel depends on. Node numbers
for ``aliasByNode``/``groupByNode`` come from :class:`Scope`, which knows
where the host and the keys sit in the path (after lmaster's prefix), so no
index is counted by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..graphite_paths import Glob, metric_pattern
from .feeds import EVERYTHING, Feeds
from .metrics import Metric

HOST_VARIABLE = Glob("$host")
"""The cluster dashboard's host(s): Grafana puts ``{node01,node02}`` here."""


@dataclass(frozen=True)
class Query:
    """A Graphite target expression and the metrics it reads."""

    expr: str
    metrics: tuple[Metric, ...]


def _arg(value: object) -> str:
    if isinstance(value, Query):
        return value.expr
    if isinstance(value, str):
        # graphite-web takes a string literally between its quotes: no escapes.
        if "'" in value:
            raise ValueError(f"cannot quote {value!r} for Graphite")
        return f"'{value}'"
    return repr(value)


def call(function: str, *args: object) -> Query:
    """``function(arg, …)``: queries pass their expression, strings are quoted."""
    metrics = tuple(metric for arg in args if isinstance(arg, Query) for metric in arg.metrics)
    return Query(f"{function}({','.join(_arg(arg) for arg in args)})", tuple(dict.fromkeys(metrics)))


@dataclass(frozen=True)
class Scope:
    """Which host(s) queries are about: a short host name or ``Glob("$host")``;
    ``feeds``: what their agents send (alternatives they do not send are left
    out of :meth:`group`)."""

    host: str
    prefix: str = ""
    feeds: Feeds = EVERYTHING

    @property
    def host_node(self) -> int:
        """Node number of the host in every path."""
        return len(self.prefix.split(".")) if self.prefix else 0

    def key_node(self, index: int) -> int:
        """Node number of the ``index``-th key below the sensor."""
        return self.host_node + 2 + index

    def series(self, metric: Metric) -> Query:
        """The metric's path pattern, as flattening names it."""
        return Query(metric_pattern(self.host, metric.sensor_name, metric.keys, self.prefix), (metric,))

    def by_keys(self, query: Query | Metric, *indexes: int) -> Query:
        """``aliasByNode``: name each series by the keys at ``indexes`` (NIC, field…)."""
        query = self.series(query) if isinstance(query, Metric) else query
        return call("aliasByNode", query, *(self.key_node(index) for index in indexes))

    def per_host(self, query: Query | Metric, aggregate: str) -> Query:
        """``groupByNode``: one series per host, ``aggregate`` of its series."""
        query = self.series(query) if isinstance(query, Metric) else query
        return call("groupByNode", query, self.host_node, aggregate)

    def group(self, *metrics: Metric) -> Query:
        """All of these metrics in one series list (absent ones add nothing),
        without those the agents do not send, unless that is all of them
        (then the target reads nothing sent, and the layout drops it)."""
        sent = [metric for metric in metrics if self.feeds.sends(metric)] or metrics
        return call("group", *(self.series(metric) for metric in sent))


def rate(query: Query) -> Query:
    """Counters since boot as a change per second; a reset (reboot) is a gap.

    ``interpolate`` first: a sensor that samples more slowly than the whisper
    step leaves empty slots between its values, and ``perSecond`` of such a
    series would be empty too (DiskIOCounters every 20 s into 10 s slots).
    """
    return call("perSecond", call("interpolate", query))


def alias(query: Query, name: str) -> Query:
    return call("alias", query, name)


def mount_points(scope: Scope, single: Metric, each: Metric) -> Query:
    """One DiskUsage field for every mount point, whichever of its two shapes
    the agent sends: ``DiskUsage.FIELD`` for one configured path (named
    ``path`` here: Graphite does not know which) or ``DiskUsage.MOUNT.FIELD``."""
    sensor, field = single.sensor_name, single.keys[-1]
    query = scope.group(single, each)
    query = call("aliasSub", query, rf"^.*\.{sensor}\.{field}$", "path")
    return call("aliasSub", query, rf"^.*\.{sensor}\.(.+)\.{field}$", r"\1")
