"""Disk sensors: partitions, usage per mount point, I/O counters."""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

import psutil

from ..graphite_paths import sanitize_component
from .base import Option, Sensor, register

log = logging.getLogger(__name__)


def mount_point_name(path: str) -> str:
    """Readable path component for a mount point: ``/`` → ``root``,
    ``/scratch/local`` → ``scratch_local``."""
    stripped = path.strip("/")
    return "root" if not stripped else sanitize_component(stripped)


NETWORK_FILE_SYSTEMS = frozenset(
    {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cephfs", "ceph", "cifs", "smb3", "glusterfs", "fuse.glusterfs"}
)
LOCAL_FILE_SYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "reiserfs", "vfat", "exfat", "tmpfs", "ramfs",
     "devtmpfs", "overlay", "squashfs"}
)  # fmt: skip
"""File systems whose space the kernel answers from memory: statvfs on them does not hang.
Anything else (network, FUSE, autofs, unknown) may, and is measured on a thread."""


def file_system_type(path: str, partitions: list) -> str | None:
    """The type of the file system ``path`` lies on: that of the longest mount point above it."""
    best, kind = "", None
    for part in partitions:
        mount = part.mountpoint.rstrip("/") + "/"
        if (path.rstrip("/") + "/").startswith(mount) and len(mount) >= len(best):  # the last mount shadows
            best, kind = mount, part.fstype
    return kind


@register
class DiskPartitions(Sensor):
    """Mounted partitions. Device names, mount points and options are strings,
    which Graphite cannot store, so the sensor sends the numeric facts:
    ``HOST.DiskPartitions.count``, ``read_only`` (mounted ``ro``) and
    ``fstype.TYPE`` (partitions per file system type)."""

    description = "number of mounted partitions, read-only ones, and per file system type"
    default_interval = 60.0
    blocking = False  # reads /proc or /sys only
    options = (
        Option("all", bool, False, "include pseudo file systems (proc, sysfs, tmpfs…); network ones always count"),
    )

    def read(self) -> Any:
        return psutil.disk_partitions(all=True)

    def shape(self, raw: list[dict]) -> dict:
        if not self.settings["all"]:
            # Like psutil's all=False (device-backed file systems only), but
            # keeping what a cluster cares about most: NFS, Lustre, GPFS…
            raw = [
                part
                for part in raw
                if part.get("device", "").startswith("/") or part.get("fstype") in NETWORK_FILE_SYSTEMS
            ]
        read_only = sum(1 for part in raw if "ro" in part.get("opts", "").split(","))
        by_type = Counter(part.get("fstype") or "unknown" for part in raw)
        return {"count": len(raw), "read_only": read_only, "fstype": dict(by_type)}


@register
class DiskUsage(Sensor):
    """Space on mount points in bytes and percent.

    With one ``path`` (default ``/``) the paths are 0.3.2's
    ``HOST.DiskUsage.total|used|free|percent``; with several, each mount point
    gets its own level: ``HOST.DiskUsage.root.free``, ``HOST.DiskUsage.home.free``,
    ``HOST.DiskUsage.scratch_local.free``. A path that cannot be read (not
    mounted, no permission) is skipped and logged by the agent.
    """

    description = "used, free and total space and percent used per mount point"
    default_interval = 30.0
    options = (Option("path", tuple, ("/",), "mount points to measure, separated by spaces or commas"),)

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        self._unreadable: set[str] = set()
        self._local = False

    def start(self) -> None:
        """Whether every path lies on a local file system (on a worker thread: resolving may hang)."""
        partitions = psutil.disk_partitions(all=True)
        kinds = [file_system_type(os.path.realpath(path), partitions) for path in self.settings["path"]]
        self._local = all(kind in LOCAL_FILE_SYSTEMS for kind in kinds)

    def may_block(self) -> bool:
        """Only paths on local file systems are measured on the agent's loop; statvfs on
        a dead NFS mount hangs, so any other stays on a thread of its own."""
        return not self._local

    def read(self) -> Any:
        usage = {}
        for path in self.settings["path"]:
            try:
                usage[path] = psutil.disk_usage(path)
            except OSError as error:
                self._cannot_read(path, error)
            else:
                self._unreadable.discard(path)
        return usage

    def _cannot_read(self, path: str, error: OSError) -> None:
        if path not in self._unreadable:
            log.warning("DiskUsage: cannot measure %s: %s", path, error.strerror or error)
            self._unreadable.add(path)

    def measure_compact(self) -> Any:
        paths = self.settings["path"]
        if len(paths) != 1:
            return self.measure()
        path = paths[0]  # one path: the sample is its figures (or nothing), read without a dict of paths
        try:
            usage = psutil.disk_usage(path)
        except OSError as error:
            self._cannot_read(path, error)
            return {}
        if self._unreadable:
            self._unreadable.discard(path)
        return usage

    def shape(self, raw: dict[str, dict]) -> dict:
        if len(self.settings["path"]) == 1:
            return next(iter(raw.values()), {})
        shaped: dict[str, dict] = {}
        for path, fields in raw.items():
            name, suffix = mount_point_name(path), 1
            while name in shaped:  # "/root" next to "/", "/a_b" next to "/a/b"
                suffix += 1
                name = f"{mount_point_name(path)}_{suffix}"
            shaped[name] = fields
        return shaped


@register
class DiskIOCounters(Sensor):
    """Disk I/O counters since boot (reads, writes, bytes, times):
    ``HOST.DiskIOCounters.FIELD`` for all disks together (0.3.2 paths), plus
    ``HOST.DiskIOCounters.DISK.FIELD`` per disk with ``perdisk = yes``.
    Graph them with ``perSecond()``."""

    description = "disk reads, writes, bytes and busy time (counters), total and per disk"
    default_interval = 20.0
    blocking = False  # reads /proc or /sys only
    options = (Option("perdisk", bool, False, "also one set of series per disk: HOST.DiskIOCounters.DISK.FIELD"),)

    def read(self) -> Any:
        per_disk = psutil.disk_io_counters(perdisk=True) if self.settings["perdisk"] else None
        return {"total": psutil.disk_io_counters(), "per_disk": per_disk}

    def measure_compact(self) -> Any:
        if self.settings["perdisk"]:
            return self.measure()
        return psutil.disk_io_counters() or {}  # no disk at all: an empty sample, as measure() gives

    def shape(self, raw: dict) -> dict:
        shaped = dict(raw["total"] or {})
        shaped.update(raw["per_disk"] or {})
        return shaped
