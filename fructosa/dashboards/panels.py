"""grafanalib building blocks shared by the node and cluster dashboards.

Only panel types that current Grafana ships are made here (timeseries,
stat, gauge, bargauge, heatmap, row). Every panel and target reads from the
``$datasource`` variable, so the JSON imports into any Grafana with a
Graphite data source. Where grafanalib 0.7 writes an older JSON layout than
Grafana 10 reads natively, ``extraJson`` adds the current options.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import attr
from grafanalib.core import (
    BarGauge,
    Dashboard,
    DashboardLink,
    GaugePanel,
    GridPos,
    Heatmap,
    Panel,
    RowPanel,
    Stat,
    StatValueMappingItem,
    StatValueMappings,
    Table,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

from ..graphite_paths import sanitize_component
from .feeds import EVERYTHING, Feeds
from .metrics import Metric
from .queries import Query

DATASOURCE = {"type": "graphite", "uid": "${datasource}"}
SCHEMA_VERSION = 39
"""Grafana 10.3 and later read this layout without migrating it."""

PANEL_TYPES = frozenset({"timeseries", "stat", "gauge", "bargauge", "heatmap", "table", "row", "text"})
"""Panel types of current Grafana; the tests hold every dashboard to them."""

GRID_WIDTH = 24
BASE = [{"color": "green", "value": None}]
USAGE = [*BASE, {"color": "orange", "value": 80}, {"color": "red", "value": 90}]
AUTO_POINTS = None
"""``maxDataPoints`` of graphs: Grafana asks for as many points as the panel
is wide (grafanalib's default of 100 would blur a day into 15-minute steps)."""
SPAN_NULLS_MS = 600_000
"""Lines bridge gaps up to 10 min: sensors may sample more slowly than the
whisper step (CPUCount every 300 s); a longer gap means the node was away."""


@attr.s
class GraphiteTarget(Target):
    """A Graphite target that remembers which metrics it reads (not in the
    JSON): what the panel needs from the agent configuration."""

    metrics: tuple[Metric, ...] = attr.ib(default=(), eq=False, repr=False)

    def to_json_data(self) -> dict:
        return {
            "datasource": DATASOURCE,
            "hide": self.hide,
            "refId": self.refId,
            "target": self.target,
            "textEditor": True,
        }


def ref_id(index: int) -> str:
    return chr(ord("A") + index)


def targets(queries: Sequence[Query]) -> list[GraphiteTarget]:
    """Targets ``A``, ``B``… of a panel."""
    if not 0 < len(queries) <= 26:
        raise ValueError("a panel has 1 to 26 queries")
    return [
        GraphiteTarget(refId=ref_id(index), target=query.expr, metrics=query.metrics)
        for index, query in enumerate(queries)
    ]


def only_sent(panel: Panel, feeds: Feeds) -> Panel | None:
    """The panel with only the targets that read something the agents send
    (relettered ``A``, ``B``…), or None when no target is left.

    What a panel needs is what its targets read (``GraphiteTarget.metrics``,
    each with its sensor and option condition), recorded by the queries that
    build the paths, so it cannot drift from them. A target reading several
    metrics reads alternatives (``group()``): any one sent keeps it.
    """
    kept = [target for target in panel.targets if feeds.sends_any(target.metrics)]
    if not kept:
        return None
    if len(kept) == len(panel.targets):
        return panel
    return attr.evolve(panel, targets=[attr.evolve(target, refId=ref_id(i)) for i, target in enumerate(kept)])


@dataclass
class Layout:
    """Places panels left to right in rows of 24 grid units, wrapping as needed.

    Only what ``feeds`` sends is placed: a target reading nothing sent is
    left out, then a panel without targets, then a row without panels.
    """

    feeds: Feeds = EVERYTHING
    panels: list[Panel] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _row_height: int = 0
    _open_row: RowPanel | None = None

    def row(self, title: str, panels: Sequence[Panel], collapsed: bool = False) -> None:
        """A row header and its panels; a collapsed row holds them inside."""
        panels = [sent for sent in (only_sent(panel, self.feeds) for panel in panels) if sent is not None]
        if not panels:
            return
        self._newline()
        header = RowPanel(title=title, collapsed=collapsed, gridPos=GridPos(h=1, w=GRID_WIDTH, x=0, y=self._y))
        self._y += 1
        placed = [self._place(panel) for panel in panels]
        self._newline()
        if collapsed:
            header = attr.evolve(header, panels=placed)
            self._y = header.gridPos.y + 1
            self.panels.append(header)
        else:
            self.panels += [header, *placed]

    def _place(self, panel: Panel) -> Panel:
        width, height = panel.gridPos.w, panel.gridPos.h
        if self._x + width > GRID_WIDTH:
            self._newline()
        placed = attr.evolve(panel, gridPos=GridPos(h=height, w=width, x=self._x, y=self._y))
        self._x += width
        self._row_height = max(self._row_height, height)
        return placed

    def _newline(self) -> None:
        self._y += self._row_height
        self._x = self._row_height = 0


def _size(width: int, height: int) -> GridPos:
    return GridPos(h=height, w=width, x=0, y=0)


def timeseries(
    title: str,
    queries: Sequence[Query],
    unit: str,
    *,
    description: str = "",
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    maximum: int | None = None,
) -> TimeSeries:
    return TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets(queries),
        unit=unit,
        gridPos=_size(width, height),
        thresholds=BASE,
        fillOpacity=40 if stacked else 10,
        stacking={"mode": "normal", "group": "A"} if stacked else {},
        showPoints="never",
        tooltipMode="multi",
        tooltipSort="desc",
        legendCalcs=["lastNotNull", "max"],
        legendDisplayMode="table" if width >= 12 else "list",
        maxDataPoints=AUTO_POINTS,
        valueMin=0,
        valueMax=maximum,
        extraJson={"fieldConfig": {"defaults": {"custom": {"spanNulls": SPAN_NULLS_MS}}}},
    )


def _reduce_options() -> dict:
    return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}


def gauge(title: str, query: Query, *, description: str = "", width: int = 4, height: int = 6) -> GaugePanel:
    """A 0–100 % gauge of the newest value, orange from 80 %, red from 90 %."""
    return GaugePanel(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets([query]),
        format="percent",
        calc="lastNotNull",
        min=0,
        max=100,
        thresholds=USAGE,
        gridPos=_size(width, height),
        extraJson={
            "options": {**_reduce_options(), "orientation": "auto", "showThresholdMarkers": True},
        },
    )


def stat(
    title: str,
    queries: Sequence[Query],
    unit: str,
    *,
    description: str = "",
    width: int = 4,
    height: int = 6,
    mappings: Sequence[StatValueMappingItem] = (),
    no_value: str = "no data",
    color_mode: str = "value",
    thresholds: list[dict] | None = None,
) -> Stat:
    """The newest value of each series, without a graph."""
    return Stat(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets(queries),
        format=unit,
        color={"mode": "thresholds"},
        reduceCalc="lastNotNull",
        graphMode="none",
        colorMode=color_mode,
        textMode="value_and_name",
        noValue=no_value,
        mappings=[StatValueMappings(*mappings)] if mappings else [],
        thresholds=thresholds or BASE,
        gridPos=_size(width, height),
    )


def bargauge(
    title: str, query: Query, unit: str, *, description: str = "", width: int = 8, height: int = 8
) -> BarGauge:
    """One bar per series (mount point, host), its newest value out of 100 %."""
    return BarGauge(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets([query]),
        format=unit,
        calc="lastNotNull",
        min=0,
        max=100,
        displayMode="gradient",
        orientation="horizontal",
        thresholds=USAGE,
        gridPos=_size(width, height),
        extraJson={"options": {**_reduce_options(), "showUnfilled": True}},
    )


def table(
    title: str,
    queries: Sequence[Query],
    unit: str,
    *,
    column: str,
    description: str = "",
    width: int = 8,
    height: int = 9,
    time_from: str = "2m",
) -> Table:
    """One row per series: its name (the path components a query aliases it
    by, such as a process's rank, user and name) and its newest value.

    ``time_from`` is the panel's own time range: a ranked list shows who
    held each rank lately, not everyone who held it in the dashboard's hours.
    """
    return Table(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets(queries),
        unit=unit,
        gridPos=_size(width, height),
        timeFrom=time_from,
        maxDataPoints=AUTO_POINTS,
        transformations=[
            {"id": "reduce", "options": {"mode": "seriesToRows", "reducers": ["lastNotNull"]}},
            {"id": "organize", "options": {"renameByName": {"Field": column, "Last *": "Value"}}},
            {"id": "sortBy", "options": {"sort": [{"field": column}]}},
        ],
    )


def heatmap(title: str, query: Query, unit: str, *, description: str = "", width: int = 12, height: int = 9) -> Heatmap:
    """One row of cells per series (a host), coloured by value over time."""
    return Heatmap(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets([query]),
        dataFormat="tsbuckets",
        maxDataPoints=AUTO_POINTS,
        gridPos=_size(width, height),
        thresholds=BASE,
        options={
            "calculate": False,
            "cellGap": 1,
            "cellValues": {"unit": unit},
            "color": {"mode": "scheme", "scheme": "Spectral", "reverse": True, "scale": "linear", "steps": 64},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
            "showValue": "never",
            "tooltip": {"mode": "single", "yHistogram": False},
            "yAxis": {"axisPlacement": "left", "reverse": True},
        },
    )


def uid(kind: str, name: str) -> str:
    """A stable dashboard uid within Grafana's 40 characters: re-importing a
    regenerated dashboard replaces the old one instead of adding a copy."""
    text = f"fructosa-{kind}-{sanitize_component(name)}"
    if len(text) <= 40:
        return text
    return f"{text[:31]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def datasource_variable() -> Template:
    """``$datasource``: any Graphite data source of the Grafana importing this."""
    return Template(name="datasource", label="Graphite", query="graphite", type="datasource", default=None)


def dashboard(
    *,
    title: str,
    uid: str,
    description: str,
    layout: Layout,
    variables: Sequence[Template],
    time_from: str,
    refresh: str,
) -> Dashboard:
    """The dashboard around laid-out panels, with panel ids 1, 2, … in order."""
    return Dashboard(
        title=title,
        uid=uid,
        description=description,
        tags=["fructosa"],
        panels=layout.panels,
        templating=Templating(list=[datasource_variable(), *variables]),
        time=Time(time_from, "now"),
        refresh=refresh,
        timezone="browser",
        graphTooltip=1,
        schemaVersion=SCHEMA_VERSION,
        links=[DashboardLink(title="FrUCToSA", tags=["fructosa"], asDropdown=True, includeVars=False)],
    ).auto_panel_ids()
