"""The command line of ``lagent`` and ``lmaster`` as an argparse parser.

Imported for every command except a plain ``start`` (:func:`fructosa.cli.plain_start`
reads that one), so argparse and gettext stay out of a running daemon's memory.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .cli import EXIT_CONFIG, STOP_TIMEOUT

if TYPE_CHECKING:
    from .cli import DaemonSpec


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
