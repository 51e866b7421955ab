"""lmaster's file: where it listens, Graphite, an optional upstream lmaster, logging, Slurm."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from ..graphite_paths import is_valid_path
from ..logs import LoggingConfig
from ..sinks.ring import Destination, check_ring, parse_destinations
from .alarms import ALARM_SECTIONS, ALARMS, AlarmsConfig, check_alarm_actions
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
from .jobs import JOBS, JobsConfig  # jobs
from .loader import SectionRead, load
from .locations import DEFAULT_MASTER_CONFIG
from .schema import ForeignSection, Key, Schema, Section
from .values import (
    format_size,
    parse_bool,
    parse_existing_file,
    parse_host,
    parse_http_url,
    parse_path,
    parse_port,
    parse_positive_float,
    parse_positive_int,
    parse_size,
)

DEFAULT_MASTER_SPOOL = "/var/lib/fructosa/lmaster"


@dataclass(frozen=True)
class GraphiteConfig:
    host: str = "localhost"
    port: int = 2004
    prefix: str = ""
    max_queued_datapoints: int = 1_000_000
    max_queued_bytes: int = 256 << 20
    """Bytes of the blocks held in memory for carbon (paths + 16 per datapoint), and for an upstream lmaster."""
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

    @property
    def legacy(self) -> bool:
        """One destination, ``host``:``pickle port``, as in 0.3.2 (no ``destinations`` key)."""
        return self.destinations == (Destination(self.host, self.port),)


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
class HttpConfig:
    """``[http]`` in lmaster.conf: the JSON API and the web page (:mod:`fructosa.http`); absent: no HTTP server."""

    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 8780),)
    token_file: str | None = None
    token: bytes | None = None
    """Read from ``token_file`` when the file is loaded (so a bad file is a start-up error)."""
    public_read: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    max_connections: int = 1000
    max_body: int = 1 << 20
    idle_timeout: float = 30.0
    request_timeout: float = 10.0
    # Prometheus: /metrics and the targets lmaster scrapes itself (/api/scrapes)
    metrics_staleness: float = 300.0
    metrics_max_series: int = 2_000_000
    scrapes_dir: str | None = None
    """Where ``scrapes.json`` (the targets of ``/api/scrapes``) is kept; None: lmaster's spool dir."""
    graphite_url: str | None = None
    """jobs: graphite-web, for profiles of jobs whose samples lmaster no longer keeps."""
    # live stream (GET /api/stream)
    max_stream_clients: int = 1000
    max_patterns: int = 100
    stream_queue: int = 10_000
    """Datapoints waiting for one stream client; beyond it its oldest are dropped (and it is told)."""


@dataclass(frozen=True)
class MasterConfig:
    path: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 7888
    peer_timeout: float = 10.0
    idle_timeout: float = 120.0
    max_connections: int = 4096
    max_unauthenticated: int = 256
    """Connections still in their opening (no verified hello yet); past it the oldest is dropped."""
    forget_agents_after: float = 7 * 86400.0
    """Seconds a host may stay unheard of before it leaves the agent table (liveness, status)."""
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
    http: HttpConfig | None = None
    notices: tuple[str, ...] = ()
    alarms: AlarmsConfig = AlarmsConfig()
    alarm_rules: tuple = ()
    actions: tuple = ()
    jobs: JobsConfig = JobsConfig()


def parse_prefix(text: str) -> str:
    prefix = text.strip().strip(".")
    if prefix and not is_valid_path(prefix):
        raise ValueError("a Graphite prefix is dot-separated words of letters, digits, _ and -")
    return prefix


def parse_queue_size(text: str) -> int:
    size = parse_size(text)
    if size < MIN_QUEUE_BYTES:
        raise ValueError("the memory queue needs at least 4M (a few 1 MiB batches)")
    return size


MIN_QUEUE_BYTES = 4 << 20


def format_destinations(destinations: tuple[Destination, ...] | None) -> str | None:
    return ", ".join(map(str, destinations)) if destinations else None


def check_graphite_ring(read: SectionRead) -> None:
    """Refuse a replication factor the destinations cannot honour; note a pickle port that no longer counts."""
    values = read.values
    destinations = values["graphite.destinations"] or (Destination(values["graphite.host"], values["graphite.port"]),)
    try:
        check_ring(destinations, values["graphite.replication_factor"], values["graphite.diverse_replicas"])
    except ValueError as reason:
        raise read.error("replication factor", str(reason), None if read.present else "1") from None
    if read.file.has(read.section, "destinations") and read.file.has(read.section, "carbon receiver pickle port"):
        read.file.warn(f"[{read.section}] carbon receiver pickle port ignored: destinations lists the pickle receivers")


LMASTER = Section(
    "lmaster",
    aliases=("qmaster",),
    doc="Where lmaster listens for agents, who may connect, and lmaster's own settings."
    " [qmaster] (0.3.2) is read the same.",
    keys=(
        *address_keys("listen_host", "listen_port",
                      "address to listen on; a name listens on all its addresses (localhost: 127.0.0.1 and ::1),"
                      " 0.0.0.0 on every interface"),
        *link_keys("link", True),
        Key("peer timeout", "peer_timeout", parse_positive_float,
            "seconds a new connection has to say hello, and a started frame to finish (against slow-loris peers)"),
        Key("idle timeout", "idle_timeout", parse_positive_float,
            "seconds an agent may send nothing at all before it is disconnected (agents send heartbeats)"),
        Key("max connections", "max_connections", parse_positive_int,
            "concurrent authenticated connections (agents and relays); more are refused and logged"),
        Key("max unauthenticated", "max_unauthenticated", parse_positive_int,
            "concurrent connections that have not completed their hello yet; past it the oldest of the address"
            " holding the most is dropped, so strangers squatting sockets cannot keep agents out"),
        Key("forget agents after", "forget_agents_after", parse_positive_float,
            "seconds after which a host not heard from leaves the agent table: no more HOST.fructosa.up,"
            " gone from lmaster status (604800: 7 days)"),
        Key("self metrics", "self_metrics", parse_bool,
            "send lmaster's own health under fructosa.lmaster.HOST.* and per-node liveness (HOST.fructosa.up)"),
        Key("self metrics interval", "self_metrics_interval", parse_positive_float,
            "seconds between two of those, and between two updates of the status file"),
        Key("accept relays", "accept_relays", parse_bool,
            "let other lmasters relay to this one (their [upstream] points here); use a secret file with it"),
        *spool_keys(DEFAULT_MASTER_SPOOL, 1 << 30, "datapoints acknowledged to agents while carbon is away"),
    ),
    checks=(link_check("link", server=True), mark_explicit_spool),
)  # fmt: skip

GRAPHITE = Section(
    "Graphite",
    doc="carbon, where the samples go.",
    keys=(
        Key("enabled", "graphite.enabled", parse_bool,
            "send to Graphite at all; with no, lmaster still accepts and acknowledges samples (a pure relay)"),
        Key("host", "graphite.host", parse_host, "carbon-cache (or carbon-relay) host"),
        Key("carbon receiver pickle port", "graphite.port", parse_port, "its pickle receiver, the samples go there",
            view=lambda cfg: cfg.graphite.port if cfg.graphite.legacy else None),
        Key("carbon receiver plaintext port", "graphite.plaintext_port", parse_port,
            "its plaintext (line) receiver, lmaster's own metrics go there"),
        Key("destinations", "graphite.destinations", parse_destinations,
            "several carbon-caches instead of host and pickle port: host:port[:instance], comma-separated, hashed"
            " like carbon's consistent-hashing relay (same hosts, instances and order as carbon.conf)",
            example="10.0.0.1:2004:a, 10.0.0.1:2104:b, 10.0.0.2:2004:a",
            format=format_destinations, view=lambda cfg: None if cfg.graphite.legacy else cfg.graphite.destinations),
        Key("replication factor", "graphite.replication_factor", parse_positive_int,
            "copies of each path on that many destinations (carbon's REPLICATION_FACTOR)"),
        Key("diverse replicas", "graphite.diverse_replicas", parse_bool,
            "put the copies of a path on different hosts (carbon's DIVERSE_REPLICAS)"),
        Key("prefix", "graphite.prefix", parse_prefix,
            "dot-separated prefix of every path (hpc: hpc.node01.CPUPercent.0); empty: paths as in 0.3.2"),
        Key("max queued datapoints", "graphite.max_queued_datapoints", parse_positive_int,
            "datapoints held in memory for carbon (about 150 bytes each); beyond, they go to the spool"),
        Key("max queued bytes", "graphite.max_queued_bytes", parse_queue_size,
            "bytes of the datapoints held in memory for carbon or an upstream lmaster (paths + 16 per datapoint),"
            " bounding memory whatever the path lengths; near it (or a nearly full spool) lmaster stops reading"
            " agents' batches until it drains, and the agents keep them", format=format_size),
        Key("resend window", "graphite.resend_window", parse_positive_float,
            "carbon acknowledges nothing: what was written in the last this many seconds is written again"
            " after a broken connection"),
    ),
    checks=(check_graphite_ring,),
)  # fmt: skip

UPSTREAM = Section(
    "upstream",
    optional_field="upstream",
    doc="Relay trees: forward everything to another lmaster (which needs accept relays = yes) with the same"
    " delivery guarantee; for a pure relay set [Graphite] enabled = no.",
    keys=(
        *address_keys("upstream.host", "upstream.port", "the upstream lmaster", "central-lmaster.example.org",
                      host_required="which lmaster should this one relay to?"),
        *link_keys("upstream.link", False),
    ),
    checks=(link_check("upstream.link", server=False),),
)  # fmt: skip

SLURM = Section(
    "slurm",
    optional_field="slurm",
    doc="Slurm job counts (fructosa.slurm.*) and a graphite-web event per job start and end, shown by Grafana"
    " as annotations; on a head node with the Slurm client commands.",
    keys=(
        Key("enabled", "slurm.enabled", parse_bool, "poll Slurm (the section being present turns it on)", True),
        Key("poll interval", "slurm.poll_interval", parse_positive_float,
            "seconds between two squeue polls (a job shorter than this may be missed)"),
        Key("squeue", "slurm.squeue", parse_host, "the squeue command (a name on PATH, or a path)"),
        Key("sacct", "slurm.sacct", parse_host, "the sacct command"),
        Key("command timeout", "slurm.command_timeout", parse_positive_float, "seconds each command may take"),
        Key("slurm conf", "slurm.slurm_conf", parse_existing_file,
            "SLURM_CONF for the commands, when slurm.conf is not in the default place",
            example="/etc/slurm/slurm.conf"),
        Key("events url", "slurm.events_url", parse_http_url,
            "graphite-web's events API; without it, only the metrics are sent", example="http://localhost/events/"),
    ),
)  # fmt: skip

# -- [http]: lmaster's JSON API and web page ---------------------------------------------------------

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def parse_listen(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port`` pairs separated by commas; an IPv6 address in brackets (``[::1]:8780``)."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, colon, port = item.rpartition(":")
        if not colon or not host:
            raise ValueError(f"{item!r} is not host:port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"{item!r}: write an IPv6 address in brackets, [::1]:8780")
        pairs.append((parse_host(host), parse_port(port)))
    if not pairs:
        raise ValueError("no address: host:port, several separated by commas")
    if len(set(pairs)) != len(pairs):
        raise ValueError("an address is listed twice")
    return tuple(pairs)


def format_listen(pairs: tuple[tuple[str, int], ...] | None) -> str | None:
    return ", ".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in pairs) if pairs else None


def read_token_file(path: str) -> tuple[bytes, str | None]:
    """(token, warning) from the file; OSError or ValueError with a one-line reason.

    A token that every local user can read is refused (anyone on the head node
    could read the API with it); one open to the file's group is a warning, as
    for the secret file.
    """
    with open(path, "rb") as stream:
        token = stream.read().strip()
        mode = os.fstat(stream.fileno()).st_mode
    if mode & stat.S_IROTH:
        raise ValueError(f"readable by every user (mode {mode & 0o777:o}): chmod 600 it")
    if len(token) < 16:
        raise ValueError("the token must be at least 16 characters (e.g. openssl rand -hex 32)")
    if any(byte < 0x21 or byte > 0x7E for byte in token):
        raise ValueError("the token must be printable ASCII without spaces (it travels in an HTTP header)")
    warning = None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warning = f"token file {path} is accessible to others than its owner (mode {mode & 0o777:o}): chmod 600 it"
    return token, warning


def check_http(read: SectionRead) -> None:
    """Read the token now (a bad file is a start-up error); refuse an API open to the network without one."""
    values = read.values
    token_file = values["http.token_file"]
    if token_file:
        try:
            token, warning = read_token_file(token_file)
        except OSError as error:
            raise read.error("token file", error.strerror or str(error), token_file) from None
        except ValueError as error:
            raise read.error("token file", str(error), token_file) from None
        if warning:
            read.file.warnings.append(warning)
        values["http.token"] = token
    elif not values["http.public_read"]:
        exposed = [host for host, _ in values["http.listen"] if host not in LOOPBACK_HOSTS]
        if exposed:
            raise read.error(
                "listen", f"{exposed[0]} is reachable from other hosts: set a token file (or public read = yes)"
            )
    cert, key = values["http.tls_cert"], values["http.tls_key"]
    if bool(cert) != bool(key):
        raise read.missing("tls key" if cert else "tls cert", "HTTPS needs both tls cert and tls key")


HTTP = Section(
    "http",
    optional_field="http",
    doc="lmaster's JSON API (/api/nodes, /api/openapi.json) and its web page (/); without this section no HTTP"
    " server runs. reload applies a new token file and public read; other changes need a restart.",
    keys=(
        Key("listen", "http.listen", parse_listen,
            "host:port to serve on, several separated by commas ([::1]:8780 for IPv6); beyond loopback it needs a"
            " token file or public read = yes", format=format_listen),
        Key("token file", "http.token_file", parse_path,
            "bearer token every /api request must carry (Authorization: Bearer TOKEN): a file of at least 16"
            " characters (openssl rand -hex 32), chmod 600; without it the API is open to whoever reaches listen",
            example="/etc/fructosa/http-token"),
        Key("public read", "http.public_read", parse_bool,
            "let GET requests through without the token (a wall display); the API only reads anyway"),
        Key("tls cert", "http.tls_cert", parse_existing_file, "serve HTTPS with this certificate (PEM)",
            example="/etc/fructosa/lmaster.crt"),
        Key("tls key", "http.tls_key", parse_existing_file, "the private key of tls cert",
            example="/etc/fructosa/lmaster.key"),
        Key("max connections", "http.max_connections", parse_positive_int,
            "open HTTP connections; the next one is answered 503 and closed at once"),
        Key("max body", "http.max_body", parse_size,
            "request bodies larger than this are refused (413) unread (bytes, or a number with K, M, G)",
            format=format_size),
        Key("idle timeout", "http.idle_timeout", parse_positive_float,
            "seconds a keep-alive connection may wait between two requests"),
        Key("request timeout", "http.request_timeout", parse_positive_float,
            "seconds a new connection has to send its first request (slow clients are cut off)"),
        # Prometheus: /metrics and the targets lmaster scrapes itself (/api/scrapes)
        Key("metrics staleness", "http.metrics_staleness", parse_positive_float,
            "/metrics leaves out hosts whose newest value is older than this many seconds"),
        Key("metrics max series", "http.metrics_max_series", parse_positive_int,
            "series in one /metrics answer at most; the rest are left out and counted"
            " (fructosa_lmaster_metrics_series_dropped_total)"),
        Key("scrapes dir", "http.scrapes_dir", parse_path,
            "where the targets registered with POST /api/scrapes are kept (scrapes.json), to survive restarts;"
            " unset: the spool dir of [lmaster] (no spool: kept in memory only)", example="/var/lib/fructosa/lmaster"),
        Key("graphite url", "http.graphite_url", parse_http_url,  # jobs
            "graphite-web, for /api/jobs/JOBID profiles of jobs lmaster kept no samples of", example="http://localhost"),
        # live stream (GET /api/stream)
        Key("max stream clients", "http.max_stream_clients", parse_positive_int,
            "WebSocket clients of the live stream at once; the next one is answered 503"),
        Key("max patterns", "http.max_patterns", parse_positive_int,
            "Graphite glob patterns one live-stream client may hold"),
        Key("stream queue", "http.stream_queue", parse_positive_int,
            "datapoints waiting for one live-stream client; a client reading too slowly loses its oldest ones"
            " (and is told how many)"),
    ),
    checks=(check_http,),
)  # fmt: skip

MASTER_SCHEMA = Schema(
    program="lmaster",
    root=MasterConfig,
    doc=f"FrUCToSA lmaster configuration (default location {DEFAULT_MASTER_CONFIG}). Every key is optional;"
    " the values shown are the defaults. Files written for FrUCToSA 0.3.2 work unchanged ([qmaster] is read"
    " as [lmaster]). Sizes: bytes, or a number with K, M, G; booleans: yes/no.",
    sections=(LMASTER, GRAPHITE, UPSTREAM, LOGGING, SLURM, HTTP, ALARMS, JOBS),
    named=ALARM_SECTIONS,
    checks=(check_alarm_actions,),
    foreign=(ForeignSection("sensor:", "ignored: sensors run in lagent, not lmaster"),),
)


def load_master_config(path: str = DEFAULT_MASTER_CONFIG) -> MasterConfig:
    return load(MASTER_SCHEMA, path)
