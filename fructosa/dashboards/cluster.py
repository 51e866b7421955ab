"""The cluster dashboard: every selected host side by side, and who went quiet."""

from __future__ import annotations

from collections.abc import Sequence

from grafanalib.core import REFRESH_ON_TIME_RANGE_CHANGE, Dashboard, StatValueMappingItem, Template

from ..graphite_paths import short_hostname
from . import metrics as m
from .panels import DATASOURCE, Layout, bargauge, dashboard, heatmap, stat, uid
from .queries import HOST_VARIABLE, Query, Scope, alias, call, rate
from .settings import Settings

MISSING_AFTER = ("1min", "2min", "5min", "15min", "1h")
"""Choices of ``$missing_after`` (Graphite durations); the default is 5 min,
well above the 10–30 s of the heartbeat sensors' default intervals."""

HEARTBEAT_SENSORS = ", ".join(metric.sensor_name for metric in m.HEARTBEAT)


def host_variable(hosts: Sequence[str], settings: Settings) -> Template:
    """``$host``: the hosts Graphite knows, limited to the inventory's."""
    names = sorted(dict.fromkeys(short_hostname(host) for host in hosts))
    variable = Template(
        name="host",
        label="Host",
        query=f"{settings.prefix}.*" if settings.prefix else "*",
        dataSource=DATASOURCE,
        regex=f"/^({'|'.join(names)})$/",
        multi=True,
        includeAll=True,
        refresh=REFRESH_ON_TIME_RANGE_CHANGE,
    )
    # grafanalib writes one value; Grafana stores a multi-value "All" as lists.
    variable._current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return variable


def missing_after_variable() -> Template:
    return Template(
        name="missing_after",
        label="Missing after",
        type="custom",
        query=",".join(MISSING_AFTER),
        default="5min",
    )


def reporting(s: Scope) -> Query:
    """Per host: 1 while any heartbeat series got a value within
    ``$missing_after``, else 0. A host that stopped still has its whisper
    files, so it is listed with 0; one that never sent anything is not."""
    heartbeat = s.per_host(s.group(*m.HEARTBEAT), "max")
    return call("movingMax", call("isNonNull", heartbeat), "$missing_after")


def per_host_minutes(query: Query) -> Query:
    """Per-host series (named by host) averaged per minute, so sensors slower
    than the whisper step leave no holes in a heatmap row."""
    return call("aliasByNode", call("summarize", query, "1min", "avg"), 0)


def gpu_overview(s: Scope) -> list:
    """Per host, over its GPUs: the GPU row of the cluster dashboard."""
    return [
        heatmap(
            "GPU utilisation",
            per_host_minutes(s.per_host(m.GPU_UTILISATION, "average")),
            "percent",
            description="Mean over each host's GPUs (GPUs in MIG mode report none).",
        ),
        heatmap("GPU memory used", per_host_minutes(s.per_host(m.GPU_MEMORY_PERCENT, "average")), "percent"),
        heatmap(
            "GPU power",
            per_host_minutes(s.per_host(m.GPU_POWER_DRAW, "sum")),
            "watt",
            description="Power drawn by all GPUs of each host together.",
        ),
        heatmap("Hottest GPU", per_host_minutes(s.per_host(m.GPU_TEMPERATURE, "max")), "celsius"),
    ]


def cluster_dashboard(
    name: str, hosts: Sequence[str], settings: Settings | None = None, gpu_hosts: Sequence[str] = ()
) -> Dashboard:
    """Overview of the hosts of one inventory section, ``$host`` to narrow it;
    a GPU row when some of them (``gpu_hosts``) have GPUs. Only what
    ``settings.feeds`` sends is drawn, heartbeat sensors included."""
    settings = settings or Settings()
    s = Scope(HOST_VARIABLE, settings.prefix, settings.feeds)
    state = reporting(s)
    layout = Layout(settings.feeds)
    layout.row(
        "Nodes",
        [
            stat(
                "Missing nodes",
                [call("aliasByNode", call("currentBelow", state, 0), 0)],
                "none",
                width=16,
                height=5,
                color_mode="background",
                mappings=[StatValueMappingItem("missing", "0", "red")],
                no_value="none: every selected node is reporting",
                description=(
                    f"Nodes that stopped reporting: none of their heartbeat series ({HEARTBEAT_SENSORS}) "
                    "got a value within $missing_after."
                ),
            ),
            stat(
                "Nodes reporting",
                [alias(call("sumSeries", state), "reporting"), alias(call("countSeries", state), "selected")],
                "none",
                width=8,
                height=5,
            ),
        ],
    )
    layout.row(
        "Overview",
        [
            heatmap("CPU utilisation", per_host_minutes(s.per_host(m.CPU_ALL, "average")), "percent"),
            heatmap(
                "Load (busy CPUs)",
                per_host_minutes(call("scale", s.per_host(m.CPU_EACH, "sum"), 0.01)),
                "short",
                description="Sum of the per-CPU utilisation / 100: how many CPUs' worth of work, like a load average.",
            ),
            heatmap("Memory used", per_host_minutes(s.per_host(m.MEMORY_PERCENT, "average")), "percent"),
            heatmap(
                "Network traffic",
                per_host_minutes(s.per_host(rate(s.series(m.NET_BYTES)), "sum")),
                "Bps",
                description="Bytes received and sent per second, all interfaces.",
            ),
            heatmap(
                "Disk throughput",
                per_host_minutes(s.per_host(rate(s.series(m.DISK_BYTES)), "sum")),
                "Bps",
                description="Bytes read and written per second, all disks.",
            ),
            bargauge(
                "Fullest file system",
                s.per_host(s.group(m.DISK_PERCENT, m.DISK_PERCENT_EACH), "max"),
                "percent",
                width=12,
                height=9,
            ),
        ],
    )
    if gpu_hosts:
        layout.row("GPUs", gpu_overview(s))
    return dashboard(
        title=f"FrUCToSA cluster {name}",
        uid=uid("cluster", name),
        description=f"The FrUCToSA nodes of {name}: overview and nodes that stopped reporting.",
        layout=layout,
        variables=[host_variable(hosts, settings), missing_after_variable()],
        time_from=settings.time_from,
        refresh=settings.refresh,
    )
