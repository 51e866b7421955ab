"""The dashboard of one node: what its agent measures, row by row."""

from __future__ import annotations

from grafanalib.core import Dashboard, StatValueMappingItem

from ..graphite_paths import short_hostname
from . import metrics as m
from .panels import Layout, bargauge, dashboard, gauge, stat, timeseries, uid
from .queries import Scope, alias, call, mount_points, rate
from .settings import Settings

UP_DOWN = (StatValueMappingItem("up", "1", "green"), StatValueMappingItem("down", "0", "red"))
YES_NO = (StatValueMappingItem("yes", "1", "green"), StatValueMappingItem("no", "0", "orange"))


def node_dashboard(host: str, settings: Settings | None = None) -> Dashboard:
    """Rows Global, CPU, Memory, Disk, Network, Sensors, Users for ``host``."""
    settings = settings or Settings()
    name = short_hostname(host)
    s = Scope(name, settings.prefix)
    layout = Layout()

    layout.row(
        "Global",
        [
            gauge("CPU", alias(call("averageSeries", s.series(m.CPU_ALL)), "CPU")),
            gauge("Memory", alias(s.series(m.MEMORY_PERCENT), "memory")),
            gauge(
                "Disk", mount_points(s, m.DISK_PERCENT, m.DISK_PERCENT_EACH), description="Space used per mount point."
            ),
            gauge("Swap", alias(s.series(m.SWAP_PERCENT), "swap")),
            stat("Up since", [alias(call("scale", s.series(m.BOOT_TIME), 1000), "booted")], "dateTimeFromNow"),
            stat("CPUs", [alias(s.series(m.CPU_COUNT), "CPUs")], "none"),
        ],
    )
    layout.row(
        "CPU",
        [
            timeseries(
                "CPU utilisation",
                [alias(call("averageSeries", s.series(m.CPU_ALL)), "all CPUs")],
                "percent",
                maximum=100,
                width=8,
            ),
            timeseries("Utilisation per CPU", [s.by_keys(m.CPU_EACH, 0)], "percent", maximum=100, width=8),
            timeseries("CPU time by mode", [s.by_keys(m.CPU_MODES, 0)], "percent", stacked=True, width=8),
            timeseries(
                "Kernel activity",
                [s.by_keys(rate(s.series(m.KERNEL_COUNTERS)), 0)],
                "ops",
                description="Context switches, interrupts and system calls per second.",
            ),
            timeseries(
                "CPU frequency",
                [s.by_keys(m.FREQUENCY, 0), s.by_keys(m.FREQUENCY_EACH, 0)],
                "rotmhz",
                description="Per CPU with [sensor:CPUFreq] percpu = yes. Many VMs report no frequency.",
            ),
        ],
    )
    layout.row(
        "Memory",
        [
            timeseries("Memory", [s.by_keys(m.MEMORY_BYTES, 0)], "bytes"),
            timeseries(
                "Memory and swap used",
                [alias(s.series(m.MEMORY_PERCENT), "memory"), alias(s.series(m.SWAP_PERCENT), "swap")],
                "percent",
                maximum=100,
            ),
            timeseries("Swap", [s.by_keys(m.SWAP_BYTES, 0)], "bytes"),
            timeseries("Swapping", [s.by_keys(rate(s.series(m.SWAP_TRAFFIC)), 0)], "Bps"),
        ],
    )
    layout.row(
        "Disk",
        [
            bargauge("Space used", mount_points(s, m.DISK_PERCENT, m.DISK_PERCENT_EACH), "percent"),
            timeseries("Free space", [mount_points(s, m.DISK_FREE, m.DISK_FREE_EACH)], "bytes", width=8),
            stat(
                "Partitions",
                [s.by_keys(m.PARTITIONS, 0)],
                "none",
                width=8,
                height=8,
                description="Mounted partitions, and how many are read-only.",
            ),
            timeseries(
                "Disk throughput",
                [s.by_keys(rate(s.series(m.DISK_BYTES)), 0), s.by_keys(rate(s.series(m.DISK_BYTES_EACH)), 0, 1)],
                "Bps",
                width=8,
                description="All disks, and each disk with [sensor:DiskIOCounters] perdisk = yes.",
            ),
            timeseries(
                "Disk operations",
                [s.by_keys(rate(s.series(m.DISK_OPS)), 0), s.by_keys(rate(s.series(m.DISK_OPS_EACH)), 0, 1)],
                "iops",
                width=8,
            ),
            timeseries(
                "Disk busy",
                [s.by_keys(call("scale", rate(s.series(m.DISK_BUSY_EACH)), 0.1), 0)],
                "percent",
                width=8,
                description="Share of time each disk was busy (needs perdisk = yes).",
            ),
        ],
    )
    layout.row(
        "Network",
        [
            timeseries(
                "Network traffic",
                [s.by_keys(rate(s.series(m.NET_BYTES)), 0), s.by_keys(rate(s.series(m.NET_BYTES_EACH)), 0, 1)],
                "Bps",
                width=8,
                description="All interfaces, and each with [sensor:NetIOCounters] pernic = yes.",
            ),
            timeseries(
                "Packets",
                [s.by_keys(rate(s.series(m.NET_PACKETS)), 0), s.by_keys(rate(s.series(m.NET_PACKETS_EACH)), 0, 1)],
                "pps",
                width=8,
            ),
            timeseries(
                "Errors and drops",
                [s.by_keys(rate(s.series(m.NET_ERRORS)), 0), s.by_keys(rate(s.series(m.NET_ERRORS_EACH)), 0, 1)],
                "pps",
                width=8,
            ),
            timeseries(
                "Sockets",
                [alias(s.series(m.SOCKETS), "all"), s.by_keys(m.SOCKETS_EACH, 0)],
                "none",
                width=8,
            ),
            timeseries(
                "TCP connections by state",
                [call("exclude", call("groupByNode", s.series(m.TCP_SOCKETS), s.key_node(1), "sum"), "^count$")],
                "none",
                width=8,
            ),
            stat("Links", [s.by_keys(m.LINK_UP, 0)], "none", width=4, height=8, mappings=UP_DOWN),
            stat("Link speed", [s.by_keys(m.LINK_SPEED, 0)], "Mbits", width=4, height=8),
        ],
    )
    layout.row(
        "Sensors",
        [
            timeseries("Temperatures", [s.by_keys(m.TEMPERATURES, 0, 1)], "celsius"),
            timeseries("Fans", [s.by_keys(m.FANS, 0, 1)], "rotrpm"),
            gauge("Battery", alias(s.series(m.BATTERY_PERCENT), "charge")),
            stat("On mains power", [alias(s.series(m.BATTERY_PLUGGED), "on mains")], "none", mappings=YES_NO),
            stat(
                "Battery time left",
                [alias(s.series(m.BATTERY_LEFT), "time left")],
                "dtdurations",
                description="Only while discharging, where the battery gives an estimate.",
            ),
        ],
        collapsed=True,
    )
    layout.row(
        "Users",
        [
            timeseries("Logged-in users", [s.by_keys(m.USERS, 0)], "none"),
            timeseries(
                "Sessions per user",
                [s.by_keys(m.USERS_EACH, 1)],
                "none",
                description="Needs [sensor:Users] per_user = yes.",
            ),
        ],
    )
    return dashboard(
        title=f"FrUCToSA node {name}",
        uid=uid("node", name),
        description=f"Everything the FrUCToSA agent on {name} measures.",
        layout=layout,
        variables=[],
        time_from=settings.time_from,
        refresh=settings.refresh,
    )
