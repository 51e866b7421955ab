"""The command line shared by ``lagent`` and ``lmaster``.

``{start,stop,restart,status,reload,check}`` (and ``lagent sensors``).
Everything that can be wrong with a start (config, log file, listening port,
master host, spool, pidfile) is checked *before* detaching, so the admin sees
one line naming the problem on the terminal, and the exit status tells
scripts: 0 success, 1 failure, 2 bad configuration or usage, 3 not running.
The two programs differ only in their :class:`DaemonSpec` (``programs.py``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from . import __version__, config, daemon, logs
from .config.record import Factory, FrozenRecord, Record

if TYPE_CHECKING:
    import argparse  # imported by cli_parser, for any command but a plain start (plain_start)
    import asyncio  # imported by start(): asyncio imports ssl, which lagent without TLS keeps out (programs.py)

log = logging.getLogger("fructosa")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_NOT_RUNNING = 0, 1, 2, 3
STOP_TIMEOUT = 30.0


class StartError(Exception):
    """A reason not to start; ``str()`` is the one line shown to the admin."""


class Prepared(Record):
    """What a daemon needs after detaching, checked and opened before it."""

    run: Callable[[asyncio.Event], Awaitable[None]]
    reload: Callable[[Any], None] = lambda new_config: None
    """Applies a new, already validated configuration to the running daemon."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    """The event loop the daemon runs on (``asyncio.Runner``'s ``loop_factory``); None: asyncio's default."""
    keep_fds: list[int] = Factory(list)
    warnings: list[str] = Factory(list)
    """Said in the log once logging is set up."""


class DaemonSpec(FrozenRecord):
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
    extra_actions: dict[str, Callable[[argparse.Namespace], int]] = Factory(dict)
    add_extra_parsers: Callable[[Any], None] = lambda subparsers: None


def build_parser(spec: DaemonSpec) -> argparse.ArgumentParser:
    """The full command line (:mod:`fructosa.cli_parser`, which imports argparse)."""
    from .cli_parser import build_parser as build

    return build(spec)


OPTIONS_WITH_VALUE = {"-c": "config", "--config": "config", "-p": "pidfile", "--pidfile": "pidfile"}
"""The options both levels of the command line take, and where their value goes."""
START_FLAGS = {"-f": "foreground", "--foreground": "foreground"}


def plain_start(spec: DaemonSpec, argv: list[str]) -> SimpleNamespace | None:
    """``start``'s arguments when ``argv`` is a plain start (only ``-c``/``--config``
    and ``-p``/``--pidfile`` with their value, also as ``--config=FILE``, around the
    word ``start``, and ``-f``/``--foreground`` after it), parsed as argparse parses
    them: the last value given wins. Anything else (help, another action, an abbreviation, a
    value that looks like an option...) gives None, and argparse parses it.

    Why: ``start`` is the one command a daemon runs for good; argparse with
    gettext stay in its memory (~0.5 MB of lagent's ~20). The test
    tests/test_cli_plain_start.py checks that both parse alike."""
    values: dict[str, Any] = {"config": spec.default_config, "pidfile": spec.default_pidfile}
    action: str | None = None
    foreground = False
    index = 0
    while index < len(argv):
        word = argv[index]
        if word.startswith("--") and word.partition("=")[0] in OPTIONS_WITH_VALUE and "=" in word:
            option, _, value = word.partition("=")
        elif word in OPTIONS_WITH_VALUE and index + 1 < len(argv):
            option, value = word, argv[index + 1]
            index += 1
        elif word == "start" and action is None:
            action, option, value = word, "", ""
        elif word in START_FLAGS and action is not None:
            foreground, option, value = True, "", ""
        else:
            return None
        if option:
            if not value or value.startswith("-"):
                return None
            values[OPTIONS_WITH_VALUE[option]] = value
        index += 1
    if action is None:
        return None
    return SimpleNamespace(config=values["config"], pidfile=values["pidfile"], action=action, foreground=foreground)


def status_path(pidfile: str) -> str:
    """Where a running daemon writes its status: next to its pidfile."""
    base = pidfile[:-4] if pidfile.endswith(".pid") else pidfile
    return f"{base}.status.json"


def main(spec: DaemonSpec, argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args: Any = plain_start(spec, words) or build_parser(spec).parse_args(words)
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

        with asyncio.Runner(loop_factory=prepared.loop_factory) as runner:  # asyncio.run, on the daemon's loop
            runner.run(_serve(prepared.run, reload_configuration, early_signals))
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
