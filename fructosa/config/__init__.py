"""INI configuration → typed objects, with FrUCToSA 0.3.2's keys and defaults.

Both daemons read one INI file (configparser syntax, ``#`` comments, keys
with spaces). Problems that would make the daemon misbehave raise
:class:`ConfigError` with one line naming file, section, key and value;
harmless oddities (unknown sensors or keys, a ``[Graphite]`` section in the
agent's file) become warnings that the daemon logs once logging is set up.
"""

from __future__ import annotations

import configparser
import difflib
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..adaptive import FAST_HOLD, FAST_INTERVAL, FAST_KEYS, FAST_WHEN, FastSampling, parse_condition, parse_fast
from ..graphite_paths import is_valid_path, short_hostname
from ..sensors import REGISTRY
from ..sensors.base import TIME_INTERVAL, parse_bool, parse_positive_float
from ..sinks.ring import Destination, check_ring, parse_destinations
from ..wire import auth

DEFAULT_AGENT_CONFIG = "/etc/fructosa/lagent.conf"
DEFAULT_MASTER_CONFIG = "/etc/fructosa/lmaster.conf"
SENSOR_SECTION_PREFIX = "sensor:"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """A configuration the daemon refuses to run with; ``str()`` is one line."""


@dataclass(frozen=True)
class LoggingConfig:
    filename: str | None = "/var/log/fructosa.log"
    """None: no log file (``log file = None`` in 0.3.2's examples)."""
    max_bytes: int = 134217728
    backup_count: int = 5
    level: str = "INFO"
    syslog: bool = False


@dataclass(frozen=True)
class SensorConfig:
    name: str
    interval: float
    settings: dict[str, Any]
    fast: FastSampling | None = None
    """adaptive sampling (fructosa/adaptive.py), None when the sensor keeps one interval."""


@dataclass(frozen=True)
class GraphiteConfig:
    host: str = "localhost"
    port: int = 2004
    prefix: str = ""
    max_queued_datapoints: int = 1_000_000
    resend_window: float = 5.0
    enabled: bool = True
    plaintext_port: int = 2003
    """carbon's line receiver, where lmaster's own metrics go (via graphyte)."""
    destinations: tuple[Destination, ...] = ()
    """carbon pickle receivers, hashed like carbon's consistent-hashing relay;
    empty when built means the single legacy ``host``:``port``."""
    replication_factor: int = 1
    diverse_replicas: bool = True
    """carbon's DIVERSE_REPLICAS: the copies of a path go to different hosts."""

    def __post_init__(self) -> None:
        if not self.destinations:
            object.__setattr__(self, "destinations", (Destination(self.host, self.port),))


@dataclass(frozen=True)
class LinkConfig:
    """Security of the agent ↔ master connection (``[lmaster]`` in both files)."""

    secret: bytes | None = None
    secret_file: str | None = None
    tls: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None


@dataclass(frozen=True)
class SpoolConfig:
    directory: str
    max_bytes: int
    explicit: bool = False
    """Configured by the admin (unusable: refuse to start) or the default
    (unusable, e.g. not root: warn and buffer in memory only)."""


@dataclass(frozen=True)
class AgentConfig:
    path: str
    master_host: str = "127.0.0.1"
    master_port: int = 7888
    hostname: str = field(default_factory=lambda: short_hostname(socket.gethostname()))
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


@dataclass(frozen=True)
class SlurmConfig:
    """``[slurm]`` in lmaster.conf: poll Slurm for job events and counts (fructosa.jobs.events)."""

    enabled: bool = False
    poll_interval: float = 30.0
    squeue: str = "squeue"
    sacct: str = "sacct"
    command_timeout: float = 10.0
    slurm_conf: str | None = None
    """``SLURM_CONF`` for the commands, when slurm.conf is not in the default place."""
    events_url: str | None = None
    """graphite-web's events API, e.g. ``http://graphite/events/``; None: metrics only."""


@dataclass(frozen=True)
class UpstreamConfig:
    """``[upstream]`` in lmaster.conf: relay everything to another lmaster (relay trees)."""

    host: str
    port: int = 7888
    link: LinkConfig = LinkConfig()


@dataclass(frozen=True)
class MasterConfig:
    path: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 7888
    peer_timeout: float = 10.0
    idle_timeout: float = 120.0
    max_connections: int = 4096
    self_metrics: bool = True
    self_metrics_interval: float = 10.0
    spool: SpoolConfig | None = None
    link: LinkConfig = LinkConfig()
    graphite: GraphiteConfig = GraphiteConfig()
    logging: LoggingConfig = LoggingConfig()
    warnings: tuple[str, ...] = ()
    slurm: SlurmConfig = SlurmConfig()
    accept_relays: bool = False
    """Let other lmasters relay to this one (they write paths of many hosts)."""
    upstream: UpstreamConfig | None = None


class _Reader:
    """Typed access to one parsed file, producing one-line errors and warnings."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.parser = configparser.ConfigParser(interpolation=None)
        self.warnings: list[str] = []
        try:
            with open(path, encoding="utf-8") as stream:
                self.parser.read_file(stream)
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except PermissionError:
            raise ConfigError(f"{path}: configuration file not readable (permission denied)") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, not a configuration file") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not a text file ({error.reason})") from None
        except configparser.Error as error:
            first_line = str(error).splitlines()[0].removeprefix(f"While reading from {path!r} ")
            line = getattr(error, "lineno", None)
            where = f" at line {line}" if line and "[line" not in first_line else ""
            raise ConfigError(f"{path}: malformed INI{where}: {first_line}") from None

    def error(self, section: str, key: str, value: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.path}: [{section}] {key} = {value!r}: {reason}")

    def get(self, section: str, key: str, parse: Callable[[str], Any], default: Any) -> Any:
        if not self.parser.has_option(section, key):
            return default
        raw = self.parser.get(section, key)
        try:
            return parse(raw)
        except ValueError as reason:
            raise self.error(section, key, raw, str(reason)) from None

    def warn_unknown_keys(self, section: str, known: Iterable[str]) -> None:
        known = list(known)
        for key in self.parser.options(section):
            if key not in known:
                self.warnings.append(f"{self.path}: [{section}] unknown key {key!r} ignored{did_you_mean(key, known)}")


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_port(text: str) -> int:
    port = parse_int(text)
    if not 1 <= port <= 65535:
        raise ValueError("not a TCP port (1-65535)")
    return port


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("not an integer") from None


def parse_positive_int(text: str) -> int:
    value = parse_int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from ``1048576``, ``512K``, ``64M``, ``1G`` (powers of 1024)."""
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = cleaned, ""
    if cleaned and cleaned[-1] in SIZE_UNITS:
        number, unit = cleaned[:-1], cleaned[-1]
    try:
        size = int(float(number) * SIZE_UNITS[unit])
    except ValueError:
        raise ValueError("not a size (bytes, or a number with K, M, G)") from None
    if size < 64 * 1024:
        raise ValueError("a spool needs at least 64K")
    return size


def parse_path(text: str) -> str:
    path = text.strip()
    if not path:
        raise ValueError("empty path")
    return os.path.abspath(path)


def parse_existing_file(text: str) -> str:
    path = parse_path(text)
    if not os.path.isfile(path):
        raise ValueError("no such file")
    if not os.access(path, os.R_OK):
        raise ValueError("file not readable (permission denied)")
    return path


def parse_host(text: str) -> str:
    host = text.strip()
    if not host or any(char.isspace() for char in host):
        raise ValueError("not a host name or address")
    return host


def parse_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"not a log level ({', '.join(LOG_LEVELS)})")
    return level


def parse_hostname(text: str) -> str:
    name = short_hostname(text.strip())
    if not text.strip() or name == "_":
        raise ValueError("not a usable host name")
    return name


def parse_prefix(text: str) -> str:
    prefix = text.strip().strip(".")
    if prefix and not is_valid_path(prefix):
        raise ValueError("a Graphite prefix is dot-separated words of letters, digits, _ and -")
    return prefix


NO_FILE = ("none", "no", "off", "")


def _logging(reader: _Reader) -> LoggingConfig:
    section, defaults = "logging", LoggingConfig()
    if not reader.parser.has_section(section):
        return defaults
    reader.warn_unknown_keys(section, ("filename", "log file", "maxbytes", "backupcount", "level", "send to syslog"))
    key = "log file" if reader.parser.has_option(section, "log file") else "filename"
    filename: str | None = reader.get(section, key, str.strip, defaults.filename)
    if filename is not None and filename.lower() in NO_FILE:
        filename = None
    syslog = reader.get(section, "send to syslog", parse_bool, False)
    return LoggingConfig(
        filename=filename,
        max_bytes=reader.get(section, "maxBytes", parse_int, defaults.max_bytes),
        backup_count=reader.get(section, "backupCount", parse_int, defaults.backup_count),
        level=reader.get(section, "level", parse_level, defaults.level),
        syslog=syslog,
    )


def _master_section(reader: _Reader) -> str | None:
    """``[lmaster]``, or the ``[qmaster]`` of files written for qagent/qmaster."""
    if reader.parser.has_section("lmaster"):
        if reader.parser.has_section("qmaster"):
            reader.warnings.append(f"{reader.path}: both [lmaster] and [qmaster]; [qmaster] ignored")
        return "lmaster"
    return "qmaster" if reader.parser.has_section("qmaster") else None


MASTER_ADDRESS_KEYS = ("host", "incoming data port")
LINK_KEYS = ("secret file", "tls", "tls cert", "tls key", "tls ca")


def _master_address(reader: _Reader, section: str | None) -> tuple[str, int]:
    if section is None:
        return "127.0.0.1", 7888
    return (
        reader.get(section, "host", parse_host, "127.0.0.1"),
        reader.get(section, "incoming data port", parse_port, 7888),
    )


def _link(reader: _Reader, section: str | None, program: str) -> LinkConfig:
    """Secret and TLS settings; the secret file is read now so a problem with
    it is a start-up error, not a surprise at the first connection."""
    if section is None:
        return LinkConfig()
    secret_file = reader.get(section, "secret file", parse_path, None)
    secret = None
    if secret_file:
        try:
            secret, warning = auth.read_secret(secret_file)
        except OSError as error:
            raise reader.error(section, "secret file", secret_file, error.strerror or str(error)) from None
        except ValueError as error:
            raise reader.error(section, "secret file", secret_file, str(error)) from None
        if warning:
            reader.warnings.append(warning)
    link = LinkConfig(
        secret=secret,
        secret_file=secret_file,
        tls=reader.get(section, "tls", parse_bool, False),
        tls_cert=reader.get(section, "tls cert", parse_existing_file, None),
        tls_key=reader.get(section, "tls key", parse_existing_file, None),
        tls_ca=reader.get(section, "tls ca", parse_existing_file, None),
    )
    if program == "lmaster" and bool(link.tls_cert) != bool(link.tls_key):
        key = "tls key" if link.tls_cert else "tls cert"
        raise ConfigError(f"{reader.path}: [{section}] {key} is missing: TLS needs both tls cert and tls key")
    if program == "lagent" and link.tls_cert and not link.tls_key:
        raise ConfigError(f"{reader.path}: [{section}] tls key is missing: a client certificate needs its key")
    return link


def _spool(reader: _Reader, section: str, default_dir: str, default_size: int) -> SpoolConfig:
    has_dir = reader.parser.has_section(section) and reader.parser.has_option(section, "spool dir")
    return SpoolConfig(
        directory=reader.get(section, "spool dir", parse_path, default_dir) if has_dir else default_dir,
        max_bytes=reader.get(section, "spool max size", parse_size, default_size)
        if reader.parser.has_section(section)
        else default_size,
        explicit=has_dir,
    )


def _sensors(reader: _Reader) -> tuple[SensorConfig, ...]:
    sensors = []
    for section in reader.parser.sections():
        if not section.startswith(SENSOR_SECTION_PREFIX):
            continue
        name = section[len(SENSOR_SECTION_PREFIX) :].strip()
        sensor_class = REGISTRY.get(name)
        if sensor_class is None:
            reader.warnings.append(
                f"{reader.path}: [{section}] invalid sensor name; ignored{did_you_mean(name, REGISTRY)}"
            )
            continue
        options = {option.key.lower(): option for option in sensor_class.options}
        reader.warn_unknown_keys(section, [TIME_INTERVAL, *FAST_KEYS, *options])
        interval = reader.get(section, TIME_INTERVAL, parse_positive_float, sensor_class.default_interval)
        settings = {
            option.key: reader.get(section, key, option.parse, option.default) for key, option in options.items()
        }
        sensors.append(SensorConfig(name, interval, settings, _fast_sampling(reader, section, interval)))
    configured = {sensor.name for sensor in sensors}
    for sensor in sensors:
        for metric in sorted(sensor.fast.when.metrics if sensor.fast else ()):
            if metric.split(".", 1)[0] not in configured:
                reader.warnings.append(
                    f"{reader.path}: [sensor:{sensor.name}] {FAST_WHEN} refers to {metric!r}"
                    " but that sensor is not configured: the condition never holds"
                )
    return tuple(sensors)


def _fast_sampling(reader: _Reader, section: str, slow: float) -> FastSampling | None:
    """The ``fast …`` options of one sensor section, checked together."""
    interval = reader.get(section, FAST_INTERVAL, parse_positive_float, None)
    when = reader.get(section, FAST_WHEN, lambda text: parse_condition(text, REGISTRY), None)
    hold = reader.get(section, FAST_HOLD, parse_positive_float, None)
    try:
        return parse_fast(slow, interval, when, hold)
    except ValueError as reason:
        key = next(key for key in (FAST_INTERVAL, FAST_WHEN, FAST_HOLD) if reader.parser.has_option(section, key))
        raise reader.error(section, key, reader.parser.get(section, key), str(reason)) from None


KNOWN_AGENT_SECTIONS = ("lmaster", "qmaster", "lagent", "Graphite", "logging")
KNOWN_MASTER_SECTIONS = ("lmaster", "qmaster", "Graphite", "logging", "slurm", "upstream")


def _warn_unknown_sections(reader: _Reader, known: tuple[str, ...]) -> None:
    for section in reader.parser.sections():
        if section not in known and not section.startswith(SENSOR_SECTION_PREFIX):
            reader.warnings.append(f"{reader.path}: unknown section [{section}] ignored{did_you_mean(section, known)}")


DEFAULT_AGENT_SPOOL = "/var/lib/fructosa/lagent"
DEFAULT_MASTER_SPOOL = "/var/lib/fructosa/lmaster"
AGENT_KEYS = (
    "hostname",
    "max queued samples",
    "heartbeat interval",
    "spool dir",
    "spool max size",
    "journal file",
    "self metrics",
    "self metrics interval",
)


def load_agent_config(path: str = DEFAULT_AGENT_CONFIG) -> AgentConfig:
    reader = _Reader(path)
    _warn_unknown_sections(reader, KNOWN_AGENT_SECTIONS)
    section = _master_section(reader)
    if section:
        reader.warn_unknown_keys(section, (*MASTER_ADDRESS_KEYS, *LINK_KEYS))
    master_host, master_port = _master_address(reader, section)
    defaults = AgentConfig(path=path)
    hostname, max_queued = defaults.hostname, defaults.max_queued_samples
    heartbeat, journal = defaults.heartbeat_interval, None
    self_metrics, self_interval = defaults.self_metrics, defaults.self_metrics_interval
    if reader.parser.has_section("lagent"):
        self_metrics = reader.get("lagent", "self metrics", parse_bool, self_metrics)
        self_interval = reader.get("lagent", "self metrics interval", parse_positive_float, self_interval)
        reader.warn_unknown_keys("lagent", AGENT_KEYS)
        hostname = reader.get("lagent", "hostname", parse_hostname, hostname)
        max_queued = reader.get("lagent", "max queued samples", parse_positive_int, max_queued)
        heartbeat = reader.get("lagent", "heartbeat interval", parse_positive_float, heartbeat)
        journal = reader.get("lagent", "journal file", parse_path, None)
    notices = []
    if reader.parser.has_section("Graphite"):
        notices.append(f"{path}: [Graphite] is not used by lagent: lmaster relays the samples to Graphite")
    sensors = _sensors(reader)
    return AgentConfig(
        path=path,
        master_host=master_host,
        master_port=master_port,
        hostname=hostname,
        max_queued_samples=max_queued,
        heartbeat_interval=heartbeat,
        self_metrics=self_metrics,
        self_metrics_interval=self_interval,
        spool=_spool(reader, "lagent", DEFAULT_AGENT_SPOOL, 64 << 20),
        journal_file=journal,
        link=_link(reader, section, "lagent"),
        sensors=sensors,
        logging=_logging(reader),
        warnings=tuple(reader.warnings),
        notices=tuple(notices),
    )


MASTER_KEYS = (
    "peer timeout",
    "idle timeout",
    "max connections",
    "spool dir",
    "spool max size",
    "self metrics",
    "self metrics interval",
    "accept relays",
)
UPSTREAM_KEYS = ("host", "incoming data port", *LINK_KEYS)
GRAPHITE_KEYS = (
    "host",
    "carbon receiver pickle port",
    "carbon receiver plaintext port",
    "prefix",
    "max queued datapoints",
    "resend window",
    "enabled",
    "destinations",
    "replication factor",
    "diverse replicas",
)


def load_master_config(path: str = DEFAULT_MASTER_CONFIG) -> MasterConfig:
    reader = _Reader(path)
    _warn_unknown_sections(reader, KNOWN_MASTER_SECTIONS)
    for name in reader.parser.sections():
        if name.startswith(SENSOR_SECTION_PREFIX):
            reader.warnings.append(f"{path}: [{name}] ignored: sensors run in lagent, not lmaster")
    section = _master_section(reader)
    defaults = MasterConfig(path=path)
    peer_timeout, idle_timeout, max_connections = defaults.peer_timeout, defaults.idle_timeout, defaults.max_connections
    if section:
        reader.warn_unknown_keys(section, (*MASTER_ADDRESS_KEYS, *LINK_KEYS, *MASTER_KEYS))
        peer_timeout = reader.get(section, "peer timeout", parse_positive_float, peer_timeout)
        idle_timeout = reader.get(section, "idle timeout", parse_positive_float, idle_timeout)
        max_connections = reader.get(section, "max connections", parse_positive_int, max_connections)
    self_metrics = reader.get(section, "self metrics", parse_bool, True) if section else True
    accept_relays = reader.get(section, "accept relays", parse_bool, False) if section else False
    upstream = None
    if reader.parser.has_section("upstream"):
        reader.warn_unknown_keys("upstream", UPSTREAM_KEYS)
        if not reader.parser.has_option("upstream", "host"):
            raise ConfigError(f"{path}: [upstream] host is missing: which lmaster should this one relay to?")
        upstream = UpstreamConfig(
            host=reader.get("upstream", "host", parse_host, ""),
            port=reader.get("upstream", "incoming data port", parse_port, 7888),
            link=_link(reader, "upstream", "lagent"),
        )
    self_interval = reader.get(section, "self metrics interval", parse_positive_float, 10.0) if section else 10.0
    listen_host, listen_port = _master_address(reader, section)
    graphite = GraphiteConfig()
    if reader.parser.has_section("Graphite"):
        reader.warn_unknown_keys("Graphite", GRAPHITE_KEYS)
        graphite = GraphiteConfig(
            host=reader.get("Graphite", "host", parse_host, graphite.host),
            port=reader.get("Graphite", "carbon receiver pickle port", parse_port, graphite.port),
            prefix=reader.get("Graphite", "prefix", parse_prefix, graphite.prefix),
            max_queued_datapoints=reader.get(
                "Graphite", "max queued datapoints", parse_positive_int, graphite.max_queued_datapoints
            ),
            resend_window=reader.get("Graphite", "resend window", parse_positive_float, graphite.resend_window),
            enabled=reader.get("Graphite", "enabled", parse_bool, True),
            plaintext_port=reader.get("Graphite", "carbon receiver plaintext port", parse_port, 2003),
            destinations=reader.get("Graphite", "destinations", parse_destinations, ()),
            replication_factor=reader.get("Graphite", "replication factor", parse_positive_int, 1),
            diverse_replicas=reader.get("Graphite", "diverse replicas", parse_bool, True),
        )
        _check_graphite_ring(reader, graphite)
    slurm = _slurm(reader)
    return MasterConfig(
        path=path,
        listen_host=listen_host,
        listen_port=listen_port,
        peer_timeout=peer_timeout,
        idle_timeout=idle_timeout,
        max_connections=max_connections,
        self_metrics=self_metrics,
        self_metrics_interval=self_interval,
        spool=_spool(reader, section or "lmaster", DEFAULT_MASTER_SPOOL, 1 << 30),
        link=_link(reader, section, "lmaster"),
        graphite=graphite,
        logging=_logging(reader),
        warnings=tuple(reader.warnings),
        slurm=slurm,
        accept_relays=accept_relays,
        upstream=upstream,
    )


SLURM_KEYS = ("enabled", "poll interval", "squeue", "sacct", "command timeout", "slurm conf", "events url")


def parse_http_url(text: str) -> str:
    url = text.strip()
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1].strip("/")) == 0:
        raise ValueError("not an http:// or https:// URL")
    return url


def _slurm(reader: _Reader) -> SlurmConfig:
    """``[slurm]``: present means enabled unless ``enabled = no``."""
    section, defaults = "slurm", SlurmConfig()
    if not reader.parser.has_section(section):
        return defaults
    reader.warn_unknown_keys(section, SLURM_KEYS)
    return SlurmConfig(
        enabled=reader.get(section, "enabled", parse_bool, True),
        poll_interval=reader.get(section, "poll interval", parse_positive_float, defaults.poll_interval),
        squeue=reader.get(section, "squeue", parse_host, defaults.squeue),
        sacct=reader.get(section, "sacct", parse_host, defaults.sacct),
        command_timeout=reader.get(section, "command timeout", parse_positive_float, defaults.command_timeout),
        slurm_conf=reader.get(section, "slurm conf", parse_existing_file, None),
        events_url=reader.get(section, "events url", parse_http_url, None),
    )


def _check_graphite_ring(reader: _Reader, graphite: GraphiteConfig) -> None:
    """Refuse a replication factor the destinations cannot honour; note a pickle port that no longer counts."""
    try:
        check_ring(graphite.destinations, graphite.replication_factor, graphite.diverse_replicas)
    except ValueError as reason:
        raw = reader.parser.get("Graphite", "replication factor", fallback="1")
        raise reader.error("Graphite", "replication factor", raw, str(reason)) from None
    if reader.parser.has_option("Graphite", "destinations") and reader.parser.has_option(
        "Graphite", "carbon receiver pickle port"
    ):
        reader.warnings.append(
            f"{reader.path}: [Graphite] carbon receiver pickle port ignored: destinations lists the pickle receivers"
        )


def log_findings(cfg: AgentConfig | MasterConfig, logger: logging.Logger) -> None:
    """Log what loading noticed, once logging is set up."""
    for notice in getattr(cfg, "notices", ()):
        logger.info("%s", notice)
    for warning in cfg.warnings:
        logger.warning("%s", warning)


# -- the effective configuration, as INI text ---------------------------------


def _ini_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return " ".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _ini_section(name: str, items: list[tuple[str, Any]]) -> str:
    lines = [f"[{name}]"]
    for key, value in items:
        lines.append(f"#{key} =" if value is None else f"{key} = {_ini_value(value)}")
    return "\n".join(lines) + "\n"


def _link_items(link: LinkConfig) -> list[tuple[str, Any]]:
    return [
        ("secret file", link.secret_file),
        ("tls", link.tls),
        ("tls cert", link.tls_cert),
        ("tls key", link.tls_key),
        ("tls ca", link.tls_ca),
    ]


def _logging_section(config: LoggingConfig) -> str:
    return _ini_section(
        "logging",
        [
            ("filename", config.filename if config.filename is not None else "None"),
            ("maxBytes", config.max_bytes),
            ("backupCount", config.backup_count),
            ("level", config.level),
            ("send to syslog", config.syslog),
        ],
    )


def effective_agent_ini(cfg: AgentConfig) -> str:
    """The whole configuration with every default filled in; loading it gives ``cfg`` again."""
    spool = cfg.spool or SpoolConfig(DEFAULT_AGENT_SPOOL, 64 << 20)
    sections = [
        _ini_section(
            "lmaster", [("host", cfg.master_host), ("incoming data port", cfg.master_port), *_link_items(cfg.link)]
        ),
        _ini_section(
            "lagent",
            [
                ("hostname", cfg.hostname),
                ("max queued samples", cfg.max_queued_samples),
                ("heartbeat interval", cfg.heartbeat_interval),
                ("self metrics", cfg.self_metrics),
                ("self metrics interval", cfg.self_metrics_interval),
                ("spool dir", spool.directory),
                ("spool max size", spool.max_bytes),
                ("journal file", cfg.journal_file),
            ],
        ),
        _logging_section(cfg.logging),
    ]
    for sensor in cfg.sensors:
        items = [(TIME_INTERVAL, sensor.interval), *sensor.settings.items()]
        if sensor.fast:
            items += [(FAST_INTERVAL, sensor.fast.interval), (FAST_WHEN, str(sensor.fast.when)),
                      (FAST_HOLD, sensor.fast.hold)]  # fmt: skip
        sections.append(_ini_section(f"{SENSOR_SECTION_PREFIX}{sensor.name}", items))
    return "\n".join(sections)


def effective_master_ini(cfg: MasterConfig) -> str:
    """The whole configuration with every default filled in; loading it gives ``cfg`` again."""
    spool = cfg.spool or SpoolConfig(DEFAULT_MASTER_SPOOL, 1 << 30)
    graphite = cfg.graphite
    legacy_destination = graphite.destinations == (Destination(graphite.host, graphite.port),)
    return "\n".join(
        [
            _ini_section(
                "lmaster",
                [
                    ("host", cfg.listen_host),
                    ("incoming data port", cfg.listen_port),
                    *_link_items(cfg.link),
                    ("peer timeout", cfg.peer_timeout),
                    ("idle timeout", cfg.idle_timeout),
                    ("max connections", cfg.max_connections),
                    ("self metrics", cfg.self_metrics),
                    ("self metrics interval", cfg.self_metrics_interval),
                    ("accept relays", cfg.accept_relays),
                    ("spool dir", spool.directory),
                    ("spool max size", spool.max_bytes),
                ],
            ),
            *(
                [
                    _ini_section(
                        "upstream",
                        [
                            ("host", cfg.upstream.host),
                            ("incoming data port", cfg.upstream.port),
                            *_link_items(cfg.upstream.link),
                        ],
                    )
                ]
                if cfg.upstream
                else []
            ),  # fmt: skip
            _ini_section(
                "Graphite",
                [
                    ("enabled", graphite.enabled),
                    ("host", graphite.host),
                    ("carbon receiver pickle port", graphite.port if legacy_destination else None),
                    ("carbon receiver plaintext port", graphite.plaintext_port),
                    ("destinations", None if legacy_destination else ", ".join(map(str, graphite.destinations))),
                    ("replication factor", graphite.replication_factor),
                    ("diverse replicas", graphite.diverse_replicas),
                    ("prefix", graphite.prefix),
                    ("max queued datapoints", graphite.max_queued_datapoints),
                    ("resend window", graphite.resend_window),
                ],
            ),
            _logging_section(cfg.logging),
            *([_slurm_section(cfg.slurm)] if cfg.slurm != SlurmConfig() else []),
        ]
    )


def _slurm_section(slurm: SlurmConfig) -> str:
    return _ini_section(
        "slurm",
        [
            ("enabled", slurm.enabled),
            ("poll interval", slurm.poll_interval),
            ("squeue", slurm.squeue),
            ("sacct", slurm.sacct),
            ("command timeout", slurm.command_timeout),
            ("slurm conf", slurm.slurm_conf),
            ("events url", slurm.events_url),
        ],
    )
