"""The two programs: what ``lagent`` and ``lmaster`` prepare, check and run.

Entry points ``lagent`` → :func:`agent_main`, ``lmaster`` → :func:`master_main`.
Both enter here, so lmaster's modules (its half of the configuration, the
sinks, the Master) are imported only inside lmaster's functions: ``lagent``
stays as small in memory as its own half allows. Nothing imported here loads
asyncio or OpenSSL, so that :func:`prepare_agent` can still keep OpenSSL out
of an agent without TLS (:func:`fructosa.wire.auth.keep_openssl_out`).
"""

from __future__ import annotations

import socket
import sys
import time
from typing import TYPE_CHECKING

from . import checks, cli, config
from .adaptive import GENERIC_OPTIONS_HELP
from .cli import EXIT_CONFIG, EXIT_OK, DaemonSpec, Prepared, StartError
from .graphite_paths import sample_to_datapoints, short_hostname
from .sensors import REGISTRY, SensorUnsupported
from .spool import Spool, SpoolError
from .wire import auth

if TYPE_CHECKING:
    import argparse  # the parser itself is built by cli_parser, except for a plain start


def open_spool(cfg: config.AgentConfig | config.MasterConfig, section: str, prepared: Prepared) -> Spool | None:
    """The configured spool; a default location we cannot use (not root, no
    /var/lib/fructosa) means memory-only buffering with a warning."""
    spool_cfg = cfg.spool
    if spool_cfg is None:
        return None
    try:
        spool = Spool(spool_cfg.directory, spool_cfg.max_bytes)
    except SpoolError as error:
        if spool_cfg.explicit:
            raise StartError(f"{cfg.path}: [{section}] spool dir = {spool_cfg.directory!r}: {error.strerror}") from None
        prepared.warnings.append(
            f"no disk spool ({error.strerror}; set [{section}] spool dir): buffering in memory only, "
            "so a restart while the other end is away loses data"
        )
        return None
    prepared.keep_fds.extend(spool.fds())
    prepared.warnings.extend(spool.warnings)
    return spool


def _tls_error(cfg: config.AgentConfig | config.MasterConfig, error: Exception) -> StartError:
    return StartError(f"{cfg.path}: [lmaster] tls: cannot use the certificate settings: {error}")


# -- lagent -----------------------------------------------------------------


def prepare_agent(cfg: config.AgentConfig, status_file: str) -> Prepared:
    # First, before the agent's modules bring asyncio (which imports ssl): without TLS, no OpenSSL (~5 MB).
    if not auth.wants_openssl(cfg.link, cfg.sensors):
        auth.keep_openssl_out()
    from .agent import Agent
    from .agent.batch_policy import schedule_as_batch
    from .agent.lean_loop import agent_event_loop

    schedule_as_batch()  # before any thread starts: they all inherit it

    reason = checks.resolvable(cfg.master_host, cfg.master_port)
    if reason:
        raise StartError(f"{cfg.path}: [lmaster] host = {cfg.master_host!r}: cannot resolve: {reason}")
    try:
        tls = auth.client_context_for(cfg.link)
    except OSError as error:  # ssl.SSLError is an OSError
        raise _tls_error(cfg, error) from None
    prepared = Prepared(run=lambda stop: stop.wait(), loop_factory=agent_event_loop)
    agent = Agent(cfg, open_spool(cfg, "lagent", prepared), tls, status_file)
    prepared.run, prepared.reload = agent.run, agent.reload
    return prepared


def add_sensor_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sensors", help="list the sensors, or explain one (NAME)")
    parser.add_argument("name", nargs="?", metavar="NAME", help="a sensor to explain, with its paths on this host")


def sensors_command(args: argparse.Namespace) -> int:
    """``lagent sensors [NAME]``: what can be measured, like Telegraf's --usage."""
    import difflib  # here: the daemon never needs them
    import inspect

    if args.name is None:
        width = max(len(name) for name in REGISTRY)
        for name, sensor_class in sorted(REGISTRY.items()):
            print(f"{name:<{width}}  {sensor_class.description}")
        print("\nOptions every [sensor:NAME] section takes:")
        for line in GENERIC_OPTIONS_HELP:
            print(f"  {line}")
        return EXIT_OK
    sensor_class = REGISTRY.get(args.name)
    if sensor_class is None:
        close = difflib.get_close_matches(args.name, list(REGISTRY), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else " (lagent sensors lists them)"
        print(f"lagent: error: unknown sensor {args.name!r}{hint}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{sensor_class.name}: {sensor_class.description}\n")
    print(inspect.cleandoc(sensor_class.__doc__ or ""))
    print("\nOptions:")
    print(f"  time_interval (seconds, default {sensor_class.default_interval:g})")
    print("  fast time_interval, fast when, fast hold: adaptive sampling, see 'lagent sensors'")
    for option in sensor_class.options:
        kind = "yes/no" if option.type is bool else ("list" if option.type is tuple else option.type.__name__)
        choices = f", one of {', '.join(option.choices)}" if option.choices else ""
        print(f"  {option.key} ({kind}, default {option.format_default()}{choices}): {option.help}")
    print(f"\nSample configuration:\n{sensor_class.sample_section()}\n")
    host = short_hostname(socket.gethostname())
    sensor = sensor_class()
    try:
        sensor.start()
        sensor.measure()  # a rate's first sample only takes its reference: show the second, one second on
        time.sleep(1.0)
        value = sensor.measure()
    except SensorUnsupported as reason:
        print(f"On this host ({host}): not supported ({reason}).")
        return EXIT_OK
    datapoints = sample_to_datapoints({"host": host, "sensor": sensor_class.name, "time": time.time(), "value": value})
    print(f"Graphite paths on this host now ({len(datapoints)}):")
    for path, (_, number) in datapoints:
        print(f"  {path} {number:.12g}")
    return EXIT_OK


AGENT = DaemonSpec(
    program="lagent",
    default_config=config.DEFAULT_AGENT_CONFIG,
    default_pidfile="/run/lagent.pid",
    load_config=config.load_agent_config,
    problems=checks.agent_problems,
    effective=config.effective_agent_ini,
    prepare=prepare_agent,
    extra_actions={"sensors": sensors_command},
    add_extra_parsers=add_sensor_parser,
)


def agent_main(argv: list[str] | None = None) -> int:
    return cli.main(AGENT, argv)


# -- lmaster ----------------------------------------------------------------


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening sockets for every address of ``host`` (raises OSError)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple] = set()
    try:
        for family, kind, proto, _, address in infos:
            if address in seen:
                continue
            seen.add(address)
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(1024)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def load_master_config(path: str) -> config.MasterConfig:
    """lmaster's file; :mod:`fructosa.config` imports lmaster's half of the
    schema only now, so that ``lagent``, which imports this module too, does not."""
    return config.load_master_config(path)


def prepare_master(cfg: config.MasterConfig, status_file: str) -> Prepared:
    """lmaster's listening sockets, spool and sinks, and the Master made of them."""
    from .master import Master
    from .sinks.build import build_sinks

    try:
        tls = auth.server_context_for(cfg.link)
    except OSError as error:  # ssl.SSLError is an OSError
        raise _tls_error(cfg, error) from None
    try:
        sockets = listening_sockets(cfg.listen_host, cfg.listen_port)
    except OSError as error:
        raise StartError(
            f"{cfg.path}: [lmaster] host = {cfg.listen_host!r}, incoming data port = {cfg.listen_port}: "
            f"cannot listen: {error.strerror or error}"
        ) from None
    prepared = Prepared(run=lambda stop: stop.wait(), keep_fds=[sock.fileno() for sock in sockets])
    spool = open_spool(cfg, "lmaster", prepared)
    try:
        sinks = build_sinks(cfg, spool)
    except OSError as error:  # ssl.SSLError is an OSError
        for sock in sockets:
            sock.close()
        raise StartError(f"{cfg.path}: [upstream] tls: cannot use the certificate settings: {error}") from None
    master = Master(cfg, sockets, spool, tls, status_file, sinks)
    prepared.run, prepared.reload = master.run, master.reload
    return prepared


MASTER = DaemonSpec(
    program="lmaster",
    default_config=config.DEFAULT_MASTER_CONFIG,
    default_pidfile="/run/lmaster.pid",
    load_config=load_master_config,
    problems=checks.master_problems,
    effective=config.effective_master_ini,
    prepare=prepare_master,
)


def master_main(argv: list[str] | None = None) -> int:
    return cli.main(MASTER, argv)
