"""Logging set-up shared by both daemons, from the ``[logging]`` section."""

from __future__ import annotations

import logging
import os
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


class RotatingLogFile(logging.FileHandler):
    """:class:`logging.handlers.RotatingFileHandler`'s rotation, without importing
    :mod:`logging.handlers`: that module brings :mod:`pickle`, :mod:`queue` and
    the network handlers (~0.6 MB) into every daemon for this one class.

    Before a record would take FILE to ``max_bytes`` or past it, FILE.N-1 becomes
    FILE.N, …, FILE becomes FILE.1 and a new FILE is started (N = ``backup_count``;
    with none, FILE just grows, as with the standard handler). Only a regular
    file is rotated, never a FIFO or /dev/null.
    """

    def __init__(self, filename: str, max_bytes: int, backup_count: int) -> None:
        super().__init__(filename, mode="a", encoding="utf-8")
        self.max_bytes = max_bytes
        self.backup_count = backup_count

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._should_rotate(record):
                self._rotate()
        except Exception:
            self.handleError(record)
            return
        super().emit(record)

    def _should_rotate(self, record: logging.LogRecord) -> bool:
        if self.max_bytes <= 0:
            return False
        if os.path.exists(self.baseFilename) and not os.path.isfile(self.baseFilename):
            return False
        if self.stream is None:
            self.stream = self._open()
        self.stream.seek(0, os.SEEK_END)
        return self.stream.tell() + len(self.format(record)) + len(self.terminator) >= self.max_bytes

    def _rotate(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None  # type: ignore[assignment]
        if self.backup_count > 0:
            base = self.baseFilename
            for index in range(self.backup_count - 1, 0, -1):
                if os.path.exists(f"{base}.{index}"):
                    os.replace(f"{base}.{index}", f"{base}.{index + 1}")
            if os.path.exists(base):
                os.replace(base, f"{base}.1")
        self.stream = self._open()


def open_handlers(config: LoggingConfig) -> list[logging.Handler]:
    """The file (and syslog) handlers; raises OSError (caller reports it) when unusable."""
    handlers: list[logging.Handler] = []
    if config.filename is not None:
        handlers.append(RotatingLogFile(config.filename, config.max_bytes, config.backup_count))
    if config.syslog:
        import logging.handlers  # only for syslog: see RotatingLogFile

        handlers.append(logging.handlers.SysLogHandler(address="/dev/log"))
    return handlers


def _is_syslog(handler: logging.Handler) -> bool:
    handlers = sys.modules.get("logging.handlers")  # loaded by open_handlers when there is a syslog handler
    return handlers is not None and isinstance(handler, handlers.SysLogHandler)


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
        if _is_syslog(handler):
            handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
        else:
            handler.setFormatter(formatter)
        handler.addFilter(program_filter)
        root.addHandler(handler)
    root.setLevel(config.level)
    root.propagate = False


def set_level(level: str) -> None:
    logging.getLogger("fructosa").setLevel(level)
