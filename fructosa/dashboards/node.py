"""The dashboard of one node: what its agent measures, row by row."""

from __future__ import annotations

from grafanalib.core import Dashboard, StatValueMappingItem

from ..graphite_paths import short_hostname
from . import metrics as m
from .jobs import job_panels
from .panels import Layout, bargauge, dashboard, gauge, stat, table, timeseries, uid
from .queries import Query, Scope, alias, call, mount_points, rate
from .settings import Settings

UP_DOWN = (StatValueMappingItem("up", "1", "green"), StatValueMappingItem("down", "0", "red"))
YES_NO = (StatValueMappingItem("yes", "1", "green"), StatValueMappingItem("no", "0", "orange"))


RANK = r"^rank_([0-9]+)\.([^.]+)\.(.+)$"
"""``rank_R.USER.NAME`` as ``aliasByNode`` names a top process's identity series."""


def top_processes(s: Scope, who: m.Metric) -> Query:
    """``#R NAME (USER)`` of each rank of a TopProcesses list, valued by its measure."""
    return call("aliasSub", s.by_keys(who, 1, 3, 4), RANK, r"#\1 \3 (\2)")


def process_panels(s: Scope) -> list:
    """The top-process tables (the original TODO's "table of processes with highest load")."""
    window = "the last 2 minutes: a rank that changed hands lists both processes"
    return [
        table(
            "Top processes by CPU",
            [top_processes(s, m.TOP_CPU_WHO)],
            "percent",
            column="Process (user)",
            description=f"% of one CPU, by rank, over {window}.",
        ),
        table(
            "Top processes by memory",
            [top_processes(s, m.TOP_MEMORY_WHO)],
            "bytes",
            column="Process (user)",
            description=f"Resident memory, by rank, over {window}.",
        ),
        table(
            "Pids and Slurm jobs of the top processes",
            [call("aliasSub", s.by_keys(m.TOP_IDS, 0, 1, 2), r"^(cpu|memory)\.rank_([0-9]+)\.(.+)$", r"\1 #\2 \3")],
            "none",
            column="List, rank",
            description="job_id only for processes in a Slurm job.",
        ),
    ]


def gpu_panels(s: Scope) -> list:
    """One line per GPU (named by ``[sensor:GPU] name_by``: PCI address by default)."""
    return [
        timeseries("GPU utilisation", [s.by_keys(m.GPU_UTILISATION, 0)], "percent", maximum=100, width=8,
                   description="Not reported for GPUs in MIG mode."),
        timeseries("GPU memory used", [s.by_keys(m.GPU_MEMORY_PERCENT, 0)], "percent", maximum=100, width=8),
        timeseries("GPU memory", [s.by_keys(m.GPU_MEMORY_BYTES, 0, 2)], "bytes", width=8),
        timeseries("GPU power", [s.by_keys(m.GPU_POWER, 0, 2)], "watt", width=8,
                   description="Draw and the enforced limit."),
        timeseries("GPU temperature", [s.by_keys(m.GPU_TEMPERATURE, 0)], "celsius", width=8),
        timeseries("GPU clocks", [s.by_keys(m.GPU_CLOCKS, 0, 2)], "rotmhz", width=8),
        timeseries("GPU fans", [s.by_keys(m.GPU_FAN, 0)], "percent", maximum=100, width=8,
                   description="Passively cooled boards (most data-centre GPUs) have none."),
        timeseries(
            "GPU errors",
            [s.by_keys(m.GPU_ECC, 0, 2, 3), s.by_keys(m.GPU_ERRORS, 0, 1)],
            "none",
            width=8,
            description="ECC errors (volatile: since the driver loaded; aggregate: lifetime) and "
            "values NVML failed to read in the last sample.",
        ),
        table(
            "Slurm jobs on the GPUs",
            [call("aliasSub", s.by_keys(m.GPU_JOBS, 0, 2), r"^(.+)\.([0-9]+)$", r"\1 slot \2")],
            "none",
            column="GPU, slot",
            description="Job ids by GPU memory used, largest first ([sensor:GPU] max_jobs slots).",
        ),
    ]  # fmt: skip


def node_dashboard(host: str, settings: Settings | None = None, gpus: bool = False) -> Dashboard:
    """Rows Global, CPU, Memory, Processes, GPUs (when ``gpus``: the host has
    some, so the row would not stay empty), Disk, Network, Sensors, Users;
    of them, only the targets, panels and rows ``settings.feeds`` sends."""
    settings = settings or Settings()
    name = short_hostname(host)
    s = Scope(name, settings.prefix, settings.feeds)
    layout = Layout(settings.feeds)

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
    layout.row("Processes", [*job_panels(s), *process_panels(s)])
    if gpus:
        layout.row("GPUs", gpu_panels(s))
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
