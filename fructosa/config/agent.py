"""lagent's file: where lmaster is, the agent's own settings, logging, the sensors."""

from __future__ import annotations

import socket

from ..graphite_paths import short_hostname
from ..logs import LoggingConfig
from .common import (
    LOGGING,
    LinkConfig,
    SpoolConfig,
    address_keys,
    link_check,
    link_keys,
    mark_explicit_spool,
    spool_keys,
)
from .loader import load
from .locations import DEFAULT_AGENT_CONFIG
from .record import Factory, FrozenRecord
from .schema import ForeignSection, Key, Schema, Section
from .sensor_sections import SENSORS, SensorConfig, warn_unconfigured_conditions
from .values import parse_bool, parse_path, parse_positive_float, parse_positive_int

DEFAULT_AGENT_SPOOL = "/var/lib/fructosa/lagent"


def local_hostname() -> str:
    return short_hostname(socket.gethostname())


class AgentConfig(FrozenRecord):
    """lagent's whole configuration: a record, not a dataclass, to keep the generated code out of the agent's
    memory (:mod:`.record`); copy one with :func:`.record.replace`."""

    path: str
    master_host: str = "127.0.0.1"
    master_port: int = 7888
    hostname: str = Factory(local_hostname)
    max_queued_samples: int = 20_000
    heartbeat_interval: float = 30.0
    self_metrics: bool = True
    self_metrics_interval: float = 10.0
    spool: SpoolConfig | None = None
    journal_file: str | None = None
    link: LinkConfig = LinkConfig()
    sensors: tuple[SensorConfig, ...] = ()
    logging: LoggingConfig = LoggingConfig()
    warnings: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()


def parse_hostname(text: str) -> str:
    name = short_hostname(text.strip())
    if not text.strip() or name == "_":
        raise ValueError("not a usable host name")
    return name


LMASTER = Section(
    "lmaster",
    aliases=("qmaster",),
    doc="Where lmaster listens, and how this agent proves who it is. [qmaster] (0.3.2) is read the same.",
    keys=(*address_keys("master_host", "master_port", "lmaster's host name or address"), *link_keys("link", False)),
    checks=(link_check("link", server=False),),
)

LAGENT = Section(
    "lagent",
    doc="The agent itself.",
    keys=(
        Key("hostname", "hostname", parse_hostname,
            "this node's name in Graphite paths (HOST.SENSOR.KEY); default: the short host name, unsafe"
            " characters as _", example="node01"),
        Key("max queued samples", "max_queued_samples", parse_positive_int,
            "samples kept in memory until sent or spooled; without a usable spool the oldest beyond it are dropped"),
        Key("heartbeat interval", "heartbeat_interval", parse_positive_float,
            "seconds without data before a heartbeat; lmaster marks the node down (HOST.fructosa.up = 0)"
            " after two missed"),
        Key("self metrics", "self_metrics", parse_bool,
            "send the agent's own health under HOST.fructosa.agent.* (samples/s, queue, spool, drops,"
            " reconnects, CPU, RSS, sensor intervals)"),
        Key("self metrics interval", "self_metrics_interval", parse_positive_float,
            "seconds between two of those; the status file is rewritten at most this often,"
            " and at least once a minute or once a report, whichever is rarer"),
        *spool_keys(DEFAULT_AGENT_SPOOL, 64 << 20, "samples not yet acknowledged by lmaster"),
        Key("journal file", "journal_file", parse_path,
            "debugging: append every value measured to this file, as Graphite plaintext lines",
            example="/var/log/fructosa-journal.txt"),
    ),
    checks=(mark_explicit_spool,),
)  # fmt: skip

AGENT_SCHEMA = Schema(
    program="lagent",
    root=AgentConfig,
    doc=f"FrUCToSA lagent configuration (default location {DEFAULT_AGENT_CONFIG}). Every key is optional;"
    " the values shown are the defaults, except where a comment says otherwise. Files written for FrUCToSA"
    " 0.3.2 work unchanged ([qmaster] is read as [lmaster]; a [Graphite] section is accepted and ignored:"
    " lmaster relays to Graphite). Sizes: bytes, or a number with K, M, G; booleans: yes/no.",
    sections=(LMASTER, LAGENT, LOGGING),
    named=(SENSORS,),
    foreign=(ForeignSection("Graphite", "is not used by lagent: lmaster relays the samples to Graphite", notice=True),),
    checks=(warn_unconfigured_conditions,),
)


def load_agent_config(path: str = DEFAULT_AGENT_CONFIG) -> AgentConfig:
    return load(AGENT_SCHEMA, path)
