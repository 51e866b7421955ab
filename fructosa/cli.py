"""Command lines of ``lagent`` and ``lmaster``: {start,stop,restart,status}.

Everything that can be wrong with a start (config, log file, listening port,
master host, pidfile) is checked *before* detaching, so the admin sees one
line naming the problem on the terminal, and the exit status tells scripts:
0 success, 1 failure, 2 bad configuration or usage, 3 not running (status).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from .spool import Spool

from . import __version__, auth, config, daemon, logs

log = logging.getLogger("fructosa")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_NOT_RUNNING = 0, 1, 2, 3
STOP_TIMEOUT = 30.0


class StartError(Exception):
    """A reason not to start; ``str()`` is the one line shown to the admin."""


@dataclass
class Prepared:
    """What a daemon needs after detaching, checked and opened before it."""

    run: Callable[[asyncio.Event], Awaitable[None]]
    keep_fds: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Said in the log once logging is set up."""


@dataclass(frozen=True)
class DaemonSpec:
    program: str
    default_config: str
    default_pidfile: str
    load_config: Callable[[str], Any]
    prepare: Callable[[Any], Prepared]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not usage text plus a line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(spec: DaemonSpec) -> argparse.ArgumentParser:
    def add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
        config_default = argparse.SUPPRESS if suppress else spec.default_config
        pidfile_default = argparse.SUPPRESS if suppress else spec.default_pidfile
        parser.add_argument(
            "-c",
            "--config",
            default=config_default,
            metavar="FILE",
            help=f"configuration file (default {spec.default_config})",
        )
        parser.add_argument(
            "-p",
            "--pidfile",
            default=pidfile_default,
            metavar="FILE",
            help=f"pidfile (default {spec.default_pidfile})",
        )

    parser = OneLineParser(prog=spec.program, description=f"FrUCToSA {spec.program} daemon")
    parser.add_argument("--version", action="version", version=f"{spec.program} (FrUCToSA) {__version__}")
    add_common(parser, suppress=False)
    actions = parser.add_subparsers(dest="action", metavar="{start,stop,restart,status}", required=True)
    for name, help_text in (
        ("start", "start the daemon (detached unless --foreground)"),
        ("stop", "stop the running daemon and wait until it is gone"),
        ("restart", "stop, then start"),
        ("status", "exit 0 if running, 3 if not"),
    ):
        action = actions.add_parser(name, help=help_text)
        add_common(action, suppress=True)
        if name in ("start", "restart"):
            action.add_argument(
                "-f",
                "--foreground",
                action="store_true",
                help="stay attached to the terminal and log to stderr too (systemd, containers)",
            )
        if name in ("stop", "restart"):
            action.add_argument(
                "--timeout",
                type=float,
                default=STOP_TIMEOUT,
                metavar="SECONDS",
                help=f"how long to wait for the daemon to exit (default {STOP_TIMEOUT:g})",
            )
    return parser


def main(spec: DaemonSpec, argv: list[str] | None = None) -> int:
    args = build_parser(spec).parse_args(argv)
    if args.action == "status":
        pid = daemon.running_pid(args.pidfile)
        if pid is None:
            print(f"{spec.program} is not running")
            return EXIT_NOT_RUNNING
        print(f"{spec.program} is running (pid {pid})")
        return EXIT_OK
    if args.action in ("stop", "restart"):
        ok, message = daemon.stop(args.pidfile, args.timeout)
        print(f"{spec.program}: {message}", file=sys.stderr if not ok else sys.stdout)
        if not ok:
            return EXIT_FAILURE
        if args.action == "stop":
            return EXIT_OK
    # Absolute paths: the daemon's working directory becomes /.
    return start(spec, os.path.abspath(args.config), os.path.abspath(args.pidfile), args.foreground)


def _fail(program: str, message: str, status: int) -> int:
    print(f"{program}: error: {message}", file=sys.stderr)
    return status


def start(spec: DaemonSpec, config_path: str, pidfile_path: str, foreground: bool) -> int:
    try:
        cfg = spec.load_config(config_path)
    except config.ConfigError as error:
        return _fail(spec.program, str(error), EXIT_CONFIG)
    try:
        log_handler = logs.open_log_file(cfg.logging)
    except OSError as error:
        return _fail(
            spec.program,
            f"{config_path}: [logging] filename = {cfg.logging.filename!r}: cannot open: {error.strerror or error}",
            EXIT_CONFIG,
        )
    pidfile = daemon.PidFile(pidfile_path)
    try:
        pidfile.acquire()
    except daemon.AlreadyRunning as running:
        return _fail(spec.program, f"already running (pid {running.pid}, pidfile {pidfile_path})", EXIT_FAILURE)
    except OSError as error:
        return _fail(spec.program, f"pidfile {pidfile_path}: {error.strerror or error}", EXIT_FAILURE)
    try:
        prepared = spec.prepare(cfg)
    except StartError as error:
        pidfile.release()
        return _fail(spec.program, str(error), EXIT_CONFIG)
    early_stop = _catch_stop_signals()
    try:
        if not foreground:
            daemon.daemonize(pidfile, [log_handler.stream.fileno(), *prepared.keep_fds])
        logs.configure(spec.program, cfg.logging, log_handler, to_stderr=foreground)
        log.info("%s %s started with %s (pid file %s)", spec.program, __version__, config_path, pidfile_path)
        if pidfile.stale_pid:
            log.info("replaced stale pidfile %s of pid %d, which is gone", pidfile_path, pidfile.stale_pid)
        config.log_findings(cfg, log)
        for warning in prepared.warnings:
            log.warning("%s", warning)
        asyncio.run(_serve(prepared.run, early_stop))
    except Exception as error:  # a bug: keep the traceback in the log, one line on the terminal
        log.critical("%s crashed", spec.program, exc_info=True)
        return _fail(spec.program, f"crashed: {type(error).__name__}: {error} (traceback in the log)", EXIT_FAILURE)
    finally:
        pidfile.release()
    return EXIT_OK


def _catch_stop_signals() -> list[int]:
    """Remember SIGTERM/SIGINT arriving before the event loop runs: once the
    pidfile exists, ``stop`` may signal at any moment and must get a clean exit."""
    received: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: received.append(number))
    return received


async def _serve(run: Callable[[asyncio.Event], Awaitable[None]], early_stop: list[int]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if early_stop:
        stop.set()
    await run(stop)


# -- both --------------------------------------------------------------------


def open_spool(cfg: config.AgentConfig | config.MasterConfig, section: str, prepared: Prepared) -> Spool | None:
    """The configured spool; a default location we cannot use (not root, no
    /var/lib/fructosa) means memory-only buffering with a warning."""
    from .spool import Spool, SpoolError

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
    return spool


def _tls_error(cfg: config.AgentConfig | config.MasterConfig, error: Exception) -> StartError:
    return StartError(f"{cfg.path}: [lmaster] tls: cannot use the certificate settings: {error}")


# -- lagent -----------------------------------------------------------------


def prepare_agent(cfg: config.AgentConfig) -> Prepared:
    from .agent import Agent

    reason = config.resolvable(cfg.master_host, cfg.master_port)
    if reason:
        raise StartError(f"{cfg.path}: [lmaster] host = {cfg.master_host!r}: cannot resolve: {reason}")
    link = cfg.link
    tls = None
    if link.tls or link.tls_ca or link.tls_cert:
        try:
            tls = auth.client_context(link.tls_ca, link.tls_cert, link.tls_key)
        except (OSError, ssl.SSLError) as error:
            raise _tls_error(cfg, error) from None
    prepared = Prepared(run=lambda stop: stop.wait())
    spool = open_spool(cfg, "lagent", prepared)
    prepared.run = Agent(cfg, spool, tls).run
    return prepared


AGENT = DaemonSpec(
    program="lagent",
    default_config=config.DEFAULT_AGENT_CONFIG,
    default_pidfile="/run/lagent.pid",
    load_config=config.load_agent_config,
    prepare=prepare_agent,
)


def agent_main(argv: list[str] | None = None) -> int:
    return main(AGENT, argv)


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


def prepare_master(cfg: config.MasterConfig) -> Prepared:
    from .master import Limits, Master
    from .sinks.carbon import CarbonPickleSink

    link = cfg.link
    tls = None
    if link.tls_cert:
        try:
            tls = auth.server_context(link.tls_cert, link.tls_key, link.tls_ca)
        except (OSError, ssl.SSLError) as error:
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
    graphite = cfg.graphite
    sink = CarbonPickleSink(
        graphite.host, graphite.port, graphite.prefix, graphite.max_queued_datapoints, spool, graphite.resend_window
    )
    limits = Limits(cfg.peer_timeout, cfg.idle_timeout, cfg.max_connections)
    prepared.run = Master([sink], sockets, limits, link.secret, tls).run
    return prepared


MASTER = DaemonSpec(
    program="lmaster",
    default_config=config.DEFAULT_MASTER_CONFIG,
    default_pidfile="/run/lmaster.pid",
    load_config=config.load_master_config,
    prepare=prepare_master,
)


def master_main(argv: list[str] | None = None) -> int:
    return main(MASTER, argv)
