"""Every process's CPU time and resident memory from one read of its /proc/PID/stat,
and user names by uid, looked up once and kept.

``psutil.process_iter`` with a name, a user, CPU times and memory reads three
files per process (stat, status, statm) and asks the name service for the
user of every process at every pass: on a node with hundreds of processes,
most of a "top" sample's cost, and CPU time long enough for the scheduler to
preempt the agent several times a pass. Ranking needs only the figures in
``/proc/PID/stat``, one small file that never waits on the process (unlike
``cmdline`` or ``environ``, which take its memory map's lock); the name and
user of the few processes that make a list are looked up afterwards.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Iterator
from typing import NamedTuple

PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
STAT_BYTES = 4096
"""More than a /proc/PID/stat line can hold (a 64-character name and 52 numbers)."""
UTIME, STIME, STARTTIME, RSS = 11, 12, 19, 21
"""Indexes of fields 14, 15, 22 and 24 of /proc/PID/stat (proc(5)) among the fields after the name."""
USER_NAME_TTL = 600.0
"""Seconds a uid's user name is trusted before the name service is asked again (a user
deleted and its uid given to another shows under the new name within this)."""


class ProcStat(NamedTuple):
    """One process as its /proc/PID/stat shows it."""

    pid: int
    started: int
    """Start time in clock ticks since boot: with the pid, the process's identity (pids are reused)."""
    cpu_seconds: float
    """User + system CPU time."""
    rss: int
    """Resident set in bytes (what psutil's ``memory_info().rss`` reads from statm)."""
    stat: bytes
    """The raw line, for the name of the few that are shown."""


def available() -> bool:
    """Whether this system has Linux's /proc."""
    return os.path.exists(f"{PROC}/self/stat")


def read_stat(pid: int) -> ProcStat | None:
    """``pid``'s stat, or None when it ended (or its stat cannot be read)."""
    try:
        descriptor = os.open(f"{PROC}/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(descriptor, STAT_BYTES)
    except OSError:  # ESRCH: it ended between open and read
        return None
    finally:
        os.close(descriptor)
    fields = data[data.rfind(b")") + 2 :].split()  # the name may hold spaces and parentheses
    try:
        return ProcStat(
            pid,
            int(fields[STARTTIME]),
            (int(fields[UTIME]) + int(fields[STIME])) / CLOCK_TICKS,
            int(fields[RSS]) * PAGE_SIZE,
            data,
        )
    except (IndexError, ValueError):
        return None


def all_stats() -> Iterator[ProcStat]:
    """Every process's stat (those that end meanwhile are left out)."""
    for name in os.listdir(PROC):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                yield stat


def name_of(stat: ProcStat) -> str:
    """The process name as psutil's ``name()`` gives it: the kernel's (comm, at most 15
    characters), or the command's base name when that starts with a truncated comm."""
    data = stat.stat
    name = data[data.find(b"(") + 1 : data.rfind(b")")].decode("utf-8", "surrogateescape")
    if len(name) >= 15:
        command = _first_argument(stat.pid)
        if command:
            extended = os.path.basename(command)
            if extended.startswith(name):
                return extended
    return name


def _first_argument(pid: int) -> str | None:
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    arguments = data.removesuffix(b"\0").split(b"\0")
    if len(arguments) == 1 and b" " in arguments[0]:  # a title rewritten with spaces (setproctitle), as psutil reads it
        arguments = arguments[0].split(b" ")
    return arguments[0].decode("utf-8", "surrogateescape") or None


def real_uid(pid: int) -> int | None:
    """The real uid of ``pid`` (what psutil's ``username()`` names), or None when it ended."""
    try:
        with open(f"{PROC}/{pid}/status", "rb") as stream:
            for line in stream:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class UserNames:
    """uid → user name, from the name service once per uid and :data:`USER_NAME_TTL`.

    The name service may be slow (LDAP, sssd): asked for every process at every
    sample it would cost more than the sample itself. A uid it does not know
    is named by its number, as psutil does.
    """

    def __init__(self, ttl: float = USER_NAME_TTL) -> None:
        self.ttl = ttl
        self._names: dict[int, tuple[str, float]] = {}

    def __call__(self, uid: int) -> str:
        now = time.monotonic()
        known = self._names.get(uid)
        if known is not None and now - known[1] < self.ttl:
            return known[0]
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        self._names[uid] = (name, now)
        return name
