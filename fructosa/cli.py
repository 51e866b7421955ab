"""The command line shared by ``lagent`` and ``lmaster``.

``{start,stop,restart,status,reload,check}`` (and ``lagent sensors``).
Everything that can be wrong with a start (config, log file, listening port,
master host, spool, pidfile) is checked *before* detaching, so the admin sees
one line naming the problem on the terminal, and the exit status tells
scripts: 0 success, 1 failure, 2 bad configuration or usage, 3 not running.
The two programs differ only in their :class:`DaemonSpec` (``programs.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__, config, daemon, logs

if TYPE_CHECKING:
    import asyncio  # imported by start(): asyncio imports ssl, which lagent without TLS keeps out (programs.py)

log = logging.getLogger("fructosa")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_NOT_RUNNING = 0, 1, 2, 3
STOP_TIMEOUT = 30.0


class StartError(Exception):
    """A reason not to start; ``str()`` is the one line shown to the admin."""


@dataclass
class Prepared:
    """What a daemon needs after detaching, checked and opened before it."""

    run: Callable[[asyncio.Event], Awaitable[None]]
    reload: Callable[[Any], None] = lambda new_config: None
    """Applies a new, already validated configuration to the running daemon."""
    keep_fds: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Said in the log once logging is set up."""


@dataclass(frozen=True)
class DaemonSpec:
    program: str
    default_config: str
    default_pidfile: str
    load_config: Callable[[str], Any]
    problems: Callable[[Any], list[str]]
    """Environment problems of a configuration (files, directories, hosts)."""
    effective: Callable[[Any], str]
    """The configuration as INI text with every default filled in."""
    prepare: Callable[[Any, str], Prepared]
    """(configuration, status file path) → Prepared, or StartError."""
    extra_actions: dict[str, Callable[[argparse.Namespace], int]] = field(default_factory=dict)
    add_extra_parsers: Callable[[Any], None] = lambda subparsers: None


def terminal_columns() -> int:
    """The terminal's width as :func:`shutil.get_terminal_size` finds it
    (``COLUMNS``, then standard output's terminal, else 80)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class TerminalWidthFormatter(argparse.HelpFormatter):
    """argparse's help formatter, told the terminal's width: left to itself it imports
    :mod:`shutil` for it, which brings bz2 and lzma into the daemon's memory for good."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, terminal_columns() - 2 if width is None else width)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not usage text plus a line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", TerminalWidthFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(spec: DaemonSpec) -> argparse.ArgumentParser:
    def add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
        config_default = argparse.SUPPRESS if suppress else spec.default_config
        pidfile_default = argparse.SUPPRESS if suppress else spec.default_pidfile
        parser.add_argument(
            "-c", "--config", default=config_default, metavar="FILE",
            help=f"configuration file (default {spec.default_config})",
        )  # fmt: skip
        parser.add_argument(
            "-p", "--pidfile", default=pidfile_default, metavar="FILE",
            help=f"pidfile (default {spec.default_pidfile})",
        )  # fmt: skip

    parser = OneLineParser(prog=spec.program, description=f"FrUCToSA {spec.program} daemon")
    parser.add_argument("--version", action="version", version=f"{spec.program} (FrUCToSA) {__version__}")
    add_common(parser, suppress=False)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in (
        ("start", "start the daemon (detached unless --foreground)"),
        ("stop", "stop the running daemon and wait until it is gone"),
        ("restart", "stop, then start"),
        ("status", "exit 0 if running, 3 if not"),
        ("reload", "check the configuration, then make the daemon re-read it (SIGHUP)"),
        ("check", "validate the configuration and print it with defaults filled in"),
    ):
        action = actions.add_parser(name, help=help_text)
        add_common(action, suppress=True)
        if name in ("start", "restart"):
            action.add_argument(
                "-f", "--foreground", action="store_true",
                help="stay attached to the terminal and log to stderr too (systemd, containers)",
            )  # fmt: skip
        if name in ("stop", "restart"):
            action.add_argument(
                "--timeout", type=float, default=STOP_TIMEOUT, metavar="SECONDS",
                help=f"how long to wait for the daemon to exit (default {STOP_TIMEOUT:g})",
            )  # fmt: skip
    spec.add_extra_parsers(actions)
    return parser


def status_path(pidfile: str) -> str:
    """Where a running daemon writes its status: next to its pidfile."""
    base = pidfile[:-4] if pidfile.endswith(".pid") else pidfile
    return f"{base}.status.json"


def main(spec: DaemonSpec, argv: list[str] | None = None) -> int:
    args = build_parser(spec).parse_args(argv)
    if args.action in spec.extra_actions:
        return spec.extra_actions[args.action](args)
    # Absolute paths: the daemon's working directory becomes /.
    config_path, pidfile = os.path.abspath(args.config), os.path.abspath(args.pidfile)
    if args.action == "status":
        return status(spec, pidfile)
    if args.action == "check":
        return check(spec, config_path)
    if args.action == "reload":
        return reload(spec, config_path, pidfile)
    if args.action in ("stop", "restart"):
        ok, message = daemon.stop(pidfile, args.timeout)
        print(f"{spec.program}: {message}", file=sys.stderr if not ok else sys.stdout)
        if not ok:
            return EXIT_FAILURE
        if args.action == "stop":
            return EXIT_OK
    return start(spec, config_path, pidfile, args.foreground)


def _fail(program: str, message: str, status: int) -> int:
    print(f"{program}: error: {message}", file=sys.stderr)
    return status


def status(spec: DaemonSpec, pidfile: str) -> int:
    pid = daemon.running_pid(pidfile)
    if pid is None:
        print(f"{spec.program} is not running")
        return EXIT_NOT_RUNNING
    print(f"{spec.program} is running (pid {pid})")
    report = daemon.read_status(status_path(pidfile), pid)
    if report:
        print(report)
    return EXIT_OK


def check(spec: DaemonSpec, config_path: str) -> int:
    """Validate without starting; print the effective configuration; 0 only when clean."""
    try:
        cfg = spec.load_config(config_path)
    except config.ConfigError as error:
        return _fail(spec.program, str(error), EXIT_CONFIG)
    print(f"# effective configuration of {spec.program} from {config_path}\n")
    print(spec.effective(cfg))
    problems = [*cfg.warnings, *(f"{config_path}: {problem}" for problem in spec.problems(cfg))]
    for problem in problems:
        print(f"{spec.program}: problem: {problem}", file=sys.stderr)
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        print(f"{spec.program}: {count} in {config_path}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"# {config_path}: OK", file=sys.stderr)
    return EXIT_OK


def reload(spec: DaemonSpec, config_path: str, pidfile: str) -> int:
    try:
        spec.load_config(config_path)
    except config.ConfigError as error:
        return _fail(spec.program, f"{error} (the running daemon keeps its configuration)", EXIT_CONFIG)
    pid = daemon.running_pid(pidfile)
    if pid is None or pid < 0:
        return _fail(spec.program, f"not running (pidfile {pidfile})", EXIT_NOT_RUNNING)
    os.kill(pid, signal.SIGHUP)
    print(f"{spec.program}: reloading {config_path} (pid {pid})")
    return EXIT_OK


def start(spec: DaemonSpec, config_path: str, pidfile_path: str, foreground: bool) -> int:
    try:
        cfg = spec.load_config(config_path)
    except config.ConfigError as error:
        return _fail(spec.program, str(error), EXIT_CONFIG)
    try:
        log_handlers = logs.open_handlers(cfg.logging)
    except OSError as error:
        return _fail(
            spec.program,
            f"{config_path}: [logging] filename = {cfg.logging.filename!r}: cannot open: {error.strerror or error}",
            EXIT_CONFIG,
        )
    # Once the pidfile names us, `stop` and `reload` may signal at any moment, also while
    # prepare() builds the daemon's parts: a SIGHUP there must not kill us (its default action).
    early_signals = _catch_early_signals()
    pidfile = daemon.PidFile(pidfile_path)
    try:
        pidfile.acquire()
    except daemon.AlreadyRunning as running:
        return _fail(spec.program, f"already running (pid {running.pid}, pidfile {pidfile_path})", EXIT_FAILURE)
    except OSError as error:
        return _fail(spec.program, f"pidfile {pidfile_path}: {error.strerror or error}", EXIT_FAILURE)
    try:
        prepared = spec.prepare(cfg, status_path(pidfile_path))
    except StartError as error:
        pidfile.release()
        return _fail(spec.program, str(error), EXIT_CONFIG)
    try:
        if not foreground:
            daemon.daemonize(pidfile, [*logs.handler_fds(log_handlers), *prepared.keep_fds])
        logs.configure(spec.program, cfg.logging, log_handlers, to_stderr=foreground)
        log.info("%s %s started with %s (pid file %s)", spec.program, __version__, config_path, pidfile_path)
        if pidfile.stale_pid:
            log.info("replaced stale pidfile %s of pid %d, which is gone", pidfile_path, pidfile.stale_pid)
        config.log_findings(cfg, log)
        for warning in prepared.warnings:
            log.warning("%s", warning)

        def reload_configuration() -> None:
            _reload_running(spec, config_path, prepared)

        import asyncio  # after prepare(): see the TYPE_CHECKING import above

        asyncio.run(_serve(prepared.run, reload_configuration, early_signals))
    except Exception as error:  # a bug: keep the traceback in the log, one line on the terminal
        log.critical("%s crashed", spec.program, exc_info=True)
        return _fail(spec.program, f"crashed: {type(error).__name__}: {error} (traceback in the log)", EXIT_FAILURE)
    finally:
        pidfile.release()
    return EXIT_OK


def _reload_running(spec: DaemonSpec, config_path: str, prepared: Prepared) -> None:
    """SIGHUP: a bad new configuration is rejected and the old one keeps running."""
    try:
        new_config = spec.load_config(config_path)
    except config.ConfigError as error:
        log.error("reload rejected, the running configuration stays: %s", error)
        return
    config.log_findings(new_config, log)
    for problem in spec.problems(new_config):
        log.warning("%s: %s", config_path, problem)
    logs.set_level(new_config.logging.level)
    try:
        prepared.reload(new_config)
    except Exception as error:  # never let a reload take the daemon down
        log.error("reload failed, the running configuration stays: %s: %s", type(error).__name__, error)
        return
    log.info("configuration reloaded from %s", config_path)


def _catch_early_signals() -> list[int]:
    """Remember SIGTERM/SIGINT/SIGHUP arriving before the event loop runs:
    once the pidfile exists, ``stop`` may signal at any moment."""
    received: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda number, _frame: received.append(number))
    return received


async def _serve(
    run: Callable[[asyncio.Event], Awaitable[None]], reload: Callable[[], None], early_signals: list[int]
) -> None:
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    if signal.SIGTERM in early_signals or signal.SIGINT in early_signals:
        stop.set()
    elif signal.SIGHUP in early_signals:
        loop.call_soon(reload)
    await run(stop)
