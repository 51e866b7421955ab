"""The sensor values the dashboards show, named by sensor class and keys.

This is the only place where dashboards name metrics. A :class:`Metric` is a
sensor class (so a renamed sensor is an import error, not a silent empty
panel) plus the keys below it, turned into a path by
:func:`fructosa.graphite_paths.metric_pattern`, the flattening rules' own
path builder. Field names are psutil's, as the sensors send them;
``tests/test_dashboards.py`` checks every key and alternative here against
the paths the sensors produce from their golden psutil recordings, so a key
that drifts from the sensors fails a test instead of showing "No data".

Per-instance levels (NICs, disks, mount points, chips, CPUs) are wildcards,
so one dashboard fits every node whatever its hardware.

Each metric also says what the agent configuration must hold for it to be
sent at all: its sensor section, and (``needs``) an option condition. A
panel reads only metrics, so what a panel needs is what its targets read;
``make-fructosa-dashboard --agent-config`` (:mod:`.feeds`) draws a target
only when the configuration sends what it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..graphite_paths import ANY, Glob, any_of
from ..sensors import Sensor
from ..sensors.cpu import CPUCount, CPUFreq, CPUPercent, CPUStats, CPUTimesPercent
from ..sensors.disk import DiskIOCounters, DiskPartitions, DiskUsage
from ..sensors.gpu import GPU
from ..sensors.hardware import SensorsBattery, SensorsFans, SensorsTemperatures
from ..sensors.memory import SwapMemory, VirtualMemory
from ..sensors.network import NetConnections, NetIFStats, NetIOCounters
from ..sensors.processes import TopProcesses
from ..sensors.slurm import SlurmJobs
from ..sensors.system import BootTime, Users


@dataclass(frozen=True)
class Needs:
    """A condition on a sensor's options (``[sensor:NAME]`` settings, parsed,
    defaults filled in) without which the agent does not send a metric."""

    text: str
    holds: Callable[[Mapping[str, Any]], bool]


def option_on(*keys: str) -> Needs:
    """Sent when any of these yes/no options is ``yes``."""
    return Needs(" or ".join(f"{key} = yes" for key in keys), lambda settings: any(settings[key] for key in keys))


@dataclass(frozen=True)
class Metric:
    """Values of one sensor at ``keys`` (components below ``HOST.SENSOR``).

    The agent sends them when it runs the sensor and, if given, ``needs``
    holds for the sensor's options; ``sometimes`` says when a host sending
    them has no such value at all even so (nobody logged in).
    """

    sensor: type[Sensor]
    keys: tuple[object, ...] = ()
    needs: Needs | None = None
    sometimes: str = ""

    @property
    def sensor_name(self) -> str:
        return self.sensor.name


CPU_NUMBER = Glob("[0-9]*")
"""``CPUPercent.N`` per CPU, not ``CPUPercent.total``."""

PER_CPU = Glob("cpu[0-9]*")
"""The ``cpuN`` level of sensors with ``percpu = yes``."""

# -- CPU ---------------------------------------------------------------------
PERCPU = option_on("percpu")
PERCPU_OR_TOTAL = option_on("percpu", "total")
CPU_ALL = Metric(CPUPercent, (ANY,), needs=PERCPU_OR_TOTAL)
"""Per-CPU values and, with ``total = yes``, their mean: averaging all of them
gives the mean utilisation whichever options the agent runs with."""
CPU_EACH = Metric(CPUPercent, (CPU_NUMBER,), needs=PERCPU)
CPU_HEARTBEAT = Metric(CPUPercent, (any_of(0, "total"),), needs=PERCPU_OR_TOTAL)
CPU_MODES = Metric(CPUTimesPercent, (any_of("user", "nice", "system", "iowait", "irq", "softirq", "steal"),))
CPU_COUNT = Metric(CPUCount)
KERNEL_COUNTERS = Metric(CPUStats, (any_of("ctx_switches", "interrupts", "soft_interrupts", "syscalls"),))
FREQUENCY = Metric(CPUFreq, (any_of("current", "min", "max"),))
FREQUENCY_EACH = Metric(CPUFreq, (PER_CPU, "current"), needs=PERCPU)

# -- memory --------------------------------------------------------------------
MEMORY_BYTES = Metric(VirtualMemory, (any_of("total", "used", "available", "cached", "buffers", "free"),))
MEMORY_PERCENT = Metric(VirtualMemory, ("percent",))
SWAP_BYTES = Metric(SwapMemory, (any_of("total", "used", "free"),))
SWAP_PERCENT = Metric(SwapMemory, ("percent",))
SWAP_TRAFFIC = Metric(SwapMemory, (any_of("sin", "sout"),))

# -- disks ---------------------------------------------------------------------
ONE_PATH = Needs("one path (the default)", lambda settings: len(settings["path"]) == 1)
MOUNTS = Needs("several paths", lambda settings: len(settings["path"]) > 1)
DISK_PERCENT = Metric(DiskUsage, ("percent",), needs=ONE_PATH)
DISK_PERCENT_EACH = Metric(DiskUsage, (ANY, "percent"), needs=MOUNTS)
DISK_FREE = Metric(DiskUsage, ("free",), needs=ONE_PATH)
DISK_FREE_EACH = Metric(DiskUsage, (ANY, "free"), needs=MOUNTS)
PARTITIONS = Metric(DiskPartitions, (any_of("count", "read_only"),))
PERDISK = option_on("perdisk")
DISK_BYTES = Metric(DiskIOCounters, (any_of("read_bytes", "write_bytes"),))
DISK_BYTES_EACH = Metric(DiskIOCounters, (ANY, any_of("read_bytes", "write_bytes")), needs=PERDISK)
DISK_OPS = Metric(DiskIOCounters, (any_of("read_count", "write_count"),))
DISK_OPS_EACH = Metric(DiskIOCounters, (ANY, any_of("read_count", "write_count")), needs=PERDISK)
DISK_BUSY_EACH = Metric(DiskIOCounters, (ANY, "busy_time"), needs=PERDISK)
DISK_HEARTBEAT = Metric(DiskIOCounters, ("read_count",))

# -- network ---------------------------------------------------------------------
PERNIC = option_on("pernic")
NET_BYTES = Metric(NetIOCounters, (any_of("bytes_recv", "bytes_sent"),))
NET_BYTES_EACH = Metric(NetIOCounters, (ANY, any_of("bytes_recv", "bytes_sent")), needs=PERNIC)
NET_PACKETS = Metric(NetIOCounters, (any_of("packets_recv", "packets_sent"),))
NET_PACKETS_EACH = Metric(NetIOCounters, (ANY, any_of("packets_recv", "packets_sent")), needs=PERNIC)
NET_ERRORS = Metric(NetIOCounters, (any_of("errin", "errout", "dropin", "dropout"),))
NET_ERRORS_EACH = Metric(NetIOCounters, (ANY, any_of("errin", "errout", "dropin", "dropout")), needs=PERNIC)
NET_HEARTBEAT = Metric(NetIOCounters, ("bytes_recv",))
SOCKETS = Metric(NetConnections, ("count",))
SOCKETS_EACH = Metric(NetConnections, (ANY, "count"))
TCP_SOCKETS = Metric(NetConnections, (any_of("tcp4", "tcp6"), ANY))
"""``count`` and one value per TCP state (``ESTABLISHED``, ``LISTEN``…)."""
LINK_UP = Metric(NetIFStats, (ANY, "isup"))
LINK_SPEED = Metric(NetIFStats, (ANY, "speed"))

# -- hardware sensors --------------------------------------------------------------
TEMPERATURES = Metric(SensorsTemperatures, (ANY, ANY, "current"))
FANS = Metric(SensorsFans, (ANY, ANY))
BATTERY_PERCENT = Metric(SensorsBattery, ("percent",))
BATTERY_PLUGGED = Metric(SensorsBattery, ("power_plugged",))
BATTERY_LEFT = Metric(SensorsBattery, ("secsleft",), sometimes="on battery power, once it has an estimate")

# -- system ----------------------------------------------------------------------
BOOT_TIME = Metric(BootTime)
USERS = Metric(Users, (any_of("sessions", "unique"),))
USERS_EACH = Metric(Users, ("per_user", ANY), needs=option_on("per_user"), sometimes="someone is logged in")
USERS_HEARTBEAT = Metric(Users, ("sessions",))

# -- top processes ------------------------------------------------------------------
TOP_CPU_WHO = Metric(TopProcesses, ("cpu", ANY, "who", ANY, ANY))
"""``cpu.rank_R.who.USER.NAME``: the identity of each rank, valued CPU %."""
TOP_MEMORY_WHO = Metric(TopProcesses, ("memory", ANY, "who", ANY, ANY))
"""The same for the memory list, valued resident bytes."""
TOP_IDS = Metric(TopProcesses, (any_of("cpu", "memory"), ANY, any_of("pid", "job_id")))
"""Pid and Slurm job id of each rank (numbers, so values, not path components)."""

# -- GPUs (only on dashboards of hosts with GPUs) -------------------------------------
GPU_UTILISATION = Metric(GPU, (ANY, "utilization", "gpu"), sometimes="a GPU not in MIG mode")
GPU_MEMORY_PERCENT = Metric(GPU, (ANY, "memory", "percent"))
GPU_MEMORY_BYTES = Metric(GPU, (ANY, "memory", any_of("used", "total")))
GPU_TEMPERATURE = Metric(GPU, (ANY, "temperature"))
GPU_POWER = Metric(GPU, (ANY, "power", any_of("draw", "limit")))
GPU_POWER_DRAW = Metric(GPU, (ANY, "power", "draw"))
GPU_CLOCKS = Metric(GPU, (ANY, "clocks", any_of("sm", "memory")))
GPU_FAN = Metric(GPU, (ANY, "fan"), sometimes="a GPU with a fan (not passively cooled)")
GPU_ECC = Metric(GPU, (ANY, "ecc", any_of("volatile", "aggregate"), any_of("corrected", "uncorrected")),
                 sometimes="a GPU with ECC memory")  # fmt: skip
GPU_JOBS = Metric(GPU, (ANY, "jobs", ANY, "job_id"), sometimes="a Slurm job using the GPU")
GPU_ERRORS = Metric(GPU, (ANY, "errors"))

# -- Slurm jobs ------------------------------------------------------------------

SLURM_JOB = Glob("job_*")
"""The ``job_JOBID`` level of SlurmJobs (``$job`` on the job dashboard)."""
SLURM_JOBS = Metric(SlurmJobs, ("count",))
SLURM_JOB_CPU = Metric(SlurmJobs, (SLURM_JOB, "cpu_percent"), sometimes="a Slurm job runs on the node")
SLURM_JOB_RSS = Metric(SlurmJobs, (SLURM_JOB, "rss"), sometimes="a Slurm job runs on the node")
SLURM_JOB_IO = Metric(
    SlurmJobs, (SLURM_JOB, any_of("read_bytes_per_second", "write_bytes_per_second")),
    sometimes="a Slurm job runs on the node",
)  # fmt: skip
SLURM_JOB_PROCESSES = Metric(SlurmJobs, (SLURM_JOB, "processes"), sometimes="a Slurm job runs on the node")

HEARTBEAT = (CPU_HEARTBEAT, MEMORY_PERCENT, NET_HEARTBEAT, DISK_HEARTBEAT, USERS_HEARTBEAT)
"""A node is reporting while any of these got a value lately: one frequent,
cheap series (not one per CPU or NIC) of each sensor most agents run."""
