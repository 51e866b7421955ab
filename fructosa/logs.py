"""Logging set-up shared by both daemons, from the ``[logging]`` section."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from dataclasses import dataclass

FORMAT = "%(asctime)s %(program)s[%(process)d] %(levelname)s %(name)s: %(message)s"
SYSLOG_FORMAT = "%(program)s[%(process)d]: %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class LoggingConfig:
    """``[logging]`` of either daemon's file (keys declared in fructosa/config/common.py).

    Defined here, not with the configuration, so that anything that logs
    does not import the configuration package.
    """

    filename: str | None = "/var/log/fructosa.log"
    """None: no log file (``log file = None`` in 0.3.2's examples)."""
    max_bytes: int = 134217728
    backup_count: int = 5
    level: str = "INFO"
    syslog: bool = False


class _ProgramFilter(logging.Filter):
    """Stamps each record with the program name: both daemons may share one file."""

    def __init__(self, program: str) -> None:
        super().__init__()
        self.program = program

    def filter(self, record: logging.LogRecord) -> bool:
        record.program = self.program
        return True


def open_handlers(config: LoggingConfig) -> list[logging.Handler]:
    """The file (and syslog) handlers; raises OSError (caller reports it) when unusable."""
    handlers: list[logging.Handler] = []
    if config.filename is not None:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                config.filename, maxBytes=config.max_bytes, backupCount=config.backup_count, encoding="utf-8"
            )
        )
    if config.syslog:
        handlers.append(logging.handlers.SysLogHandler(address="/dev/log"))
    return handlers


def handler_fds(handlers: list[logging.Handler]) -> list[int]:
    """Descriptors to keep open when daemonizing."""
    fds = []
    for handler in handlers:
        stream = getattr(handler, "stream", None)
        sock = getattr(handler, "socket", None)
        if stream is not None:
            fds.append(stream.fileno())
        elif sock is not None:
            fds.append(sock.fileno())
    return fds


def configure(program: str, config: LoggingConfig, handlers: list[logging.Handler], to_stderr: bool) -> None:
    """Route the ``fructosa`` loggers to the file/syslog (and stderr in the foreground)."""
    handlers = list(handlers)
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    formatter = logging.Formatter(FORMAT)
    program_filter = _ProgramFilter(program)
    root = logging.getLogger("fructosa")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        if isinstance(handler, logging.handlers.SysLogHandler):
            handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
        else:
            handler.setFormatter(formatter)
        handler.addFilter(program_filter)
        root.addHandler(handler)
    root.setLevel(config.level)
    root.propagate = False


def set_level(level: str) -> None:
    logging.getLogger("fructosa").setLevel(level)
