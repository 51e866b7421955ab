"""Network sensors: I/O counters, connections, interface addresses and state."""

from __future__ import annotations

from collections import Counter
from typing import Any

import psutil

from .base import Option, Sensor, register

ADDRESS_FAMILIES = {"AF_INET": "ipv4", "AF_INET6": "ipv6", "AF_PACKET": "link", "AF_LINK": "link"}
SOCKET_PROTOCOLS = {"SOCK_STREAM": "tcp", "SOCK_DGRAM": "udp", "SOCK_SEQPACKET": "seqpacket"}
DUPLEX_CODES = {"NIC_DUPLEX_FULL": 2, "NIC_DUPLEX_HALF": 1, "NIC_DUPLEX_UNKNOWN": 0}


@register
class NetIOCounters(Sensor):
    """Network counters since boot (bytes, packets, errors, drops):
    ``HOST.NetIOCounters.FIELD`` over all interfaces (0.3.2 paths), plus
    ``HOST.NetIOCounters.NIC.FIELD`` per interface with ``pernic = yes``.
    Graph them with ``perSecond()``."""

    description = "bytes, packets, errors and drops sent and received (counters)"
    default_interval = 10.0
    blocking = False  # reads /proc or /sys only
    options = (Option("pernic", bool, False, "also one set of series per interface: HOST.NetIOCounters.NIC.FIELD"),)

    def read(self) -> Any:
        per_nic = psutil.net_io_counters(pernic=True) if self.settings["pernic"] else None
        return {"total": psutil.net_io_counters(), "per_nic": per_nic}

    def measure_compact(self) -> Any:
        if self.settings["pernic"]:
            return self.measure()
        return psutil.net_io_counters() or {}  # no interface at all: an empty sample, as measure() gives

    def shape(self, raw: dict) -> dict:
        shaped = dict(raw["total"] or {})
        shaped.update(raw["per_nic"] or {})
        return shaped


TCP_STATES = {
    "01": psutil.CONN_ESTABLISHED, "02": psutil.CONN_SYN_SENT, "03": psutil.CONN_SYN_RECV,
    "04": psutil.CONN_FIN_WAIT1, "05": psutil.CONN_FIN_WAIT2, "06": psutil.CONN_TIME_WAIT, "07": psutil.CONN_CLOSE,
    "08": psutil.CONN_CLOSE_WAIT, "09": psutil.CONN_LAST_ACK, "0A": psutil.CONN_LISTEN, "0B": psutil.CONN_CLOSING,
}  # fmt: skip
"""The kernel's TCP states (``st`` in /proc/net/tcp) by psutil's names."""
_TCP4 = ("/proc/net/tcp", "AF_INET", "SOCK_STREAM")
_TCP6 = ("/proc/net/tcp6", "AF_INET6", "SOCK_STREAM")
_UDP4 = ("/proc/net/udp", "AF_INET", "SOCK_DGRAM")
_UDP6 = ("/proc/net/udp6", "AF_INET6", "SOCK_DGRAM")
INET_TABLES = {
    "inet": (_TCP4, _TCP6, _UDP4, _UDP6), "inet4": (_TCP4, _UDP4), "inet6": (_TCP6, _UDP6),
    "tcp": (_TCP4, _TCP6), "tcp4": (_TCP4,), "tcp6": (_TCP6,), "udp": (_UDP4, _UDP6), "udp4": (_UDP4,),
    "udp6": (_UDP6,),
}  # fmt: skip
"""The /proc/net tables of each ``kind`` psutil knows, but unix and all."""


def read_inet_table(path: str, family: str, kind: str) -> list[dict]:
    """One /proc/net table as psutil's connections in plain form (family, type, status),
    without psutil's search of every process's file descriptors for the owner, which
    the counts do not use; a table the kernel lacks (no IPv6) is empty."""
    try:
        with open(path, "rb") as table:
            lines = table.readlines()[1:]
    except FileNotFoundError:
        return []
    if kind != "SOCK_STREAM":
        return [{"family": family, "type": kind, "status": psutil.CONN_NONE} for _ in lines]
    return [{"family": family, "type": kind, "status": TCP_STATES.get(line.split()[3].decode(), psutil.CONN_NONE)}
            for line in lines if line.strip()]  # fmt: skip


@register
class NetConnections(Sensor):
    """Open sockets. Addresses are not metrics, so the sensor counts them:
    ``HOST.NetConnections.count``, ``HOST.NetConnections.PROTO.count`` and
    ``HOST.NetConnections.PROTO.STATUS`` with PROTO tcp4, tcp6, udp4, udp6,
    unix and STATUS as psutil names it (ESTABLISHED, LISTEN, TIME_WAIT…).
    Internet sockets are counted from the kernel's /proc/net tables directly."""

    description = "number of sockets per protocol and TCP state"
    default_interval = 20.0
    options = (
        Option(
            "kind",
            str,
            "inet",
            "which sockets, as psutil.net_connections(kind=…)",
            choices=("inet", "inet4", "inet6", "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "unix", "all"),
        ),
    )

    def may_block(self) -> bool:
        """Internet sockets are counted from /proc/net on the loop; unix ones need psutil's
        walk over every process's file descriptors (slow on a busy node): on a thread."""
        return self.settings["kind"] not in INET_TABLES

    def read(self) -> Any:
        tables = INET_TABLES.get(self.settings["kind"])
        if tables is None:
            return psutil.net_connections(kind=self.settings["kind"])
        return [connection for table in tables for connection in read_inet_table(*table)]

    def shape(self, raw: list[dict]) -> dict:
        shaped: dict[str, Any] = {"count": len(raw)}
        per_protocol: dict[str, Counter] = {}
        for conn in raw:
            family = conn.get("family")
            protocol = "unix" if family == "AF_UNIX" else SOCKET_PROTOCOLS.get(conn.get("type"), "other")
            if family == "AF_INET":
                protocol += "4"
            elif family == "AF_INET6":
                protocol += "6"
            counts = per_protocol.setdefault(protocol, Counter())
            counts["count"] += 1
            status = conn.get("status")
            if status and status != "NONE":
                counts[status] += 1
        shaped.update((protocol, dict(counts)) for protocol, counts in per_protocol.items())
        return shaped


@register
class NetIFAddrs(Sensor):
    """Addresses per interface. Addresses are strings, so the sensor sends how
    many each interface has per family: ``HOST.NetIFAddrs.NIC.ipv4``,
    ``.ipv6``, ``.link`` (MAC)."""

    description = "number of IPv4, IPv6 and link addresses per interface"
    default_interval = 30.0
    blocking = False  # reads /proc or /sys only

    def read(self) -> Any:
        return psutil.net_if_addrs()

    def shape(self, raw: dict[str, list[dict]]) -> dict:
        shaped = {}
        for nic, addresses in raw.items():
            counts = Counter({"ipv4": 0, "ipv6": 0, "link": 0})
            for address in addresses:
                counts[ADDRESS_FAMILIES.get(address.get("family"), "other")] += 1
            shaped[nic] = dict(counts)
        return shaped


@register
class NetIFStats(Sensor):
    """Interface state: ``HOST.NetIFStats.NIC.isup`` (1/0), ``duplex``
    (2 full, 1 half, 0 unknown), ``speed`` (Mbit/s) and ``mtu``."""

    description = "link up/down, duplex, speed and MTU per interface"
    default_interval = 30.0
    blocking = False  # reads /proc or /sys only

    def read(self) -> Any:
        return psutil.net_if_stats()

    def shape(self, raw: dict[str, dict]) -> dict:
        return {
            nic: {
                "isup": stats.get("isup"),
                "duplex": DUPLEX_CODES.get(stats.get("duplex"), 0),
                "speed": stats.get("speed"),
                "mtu": stats.get("mtu"),
            }
            for nic, stats in raw.items()
        }
