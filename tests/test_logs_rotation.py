"""The daemons' log file rotates exactly as :class:`logging.handlers.RotatingFileHandler` would.

:class:`fructosa.logs.RotatingLogFile` re-implements that rotation so that the
daemons need not import :mod:`logging.handlers` (and pickle with it); the same
records must leave the same files with the same contents.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

import pytest

from fructosa import logs
from fructosa.logs import LoggingConfig, RotatingLogFile


def write_records(handler: logging.Handler, count: int) -> None:
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    for number in range(count):
        record = logging.LogRecord(
            "fructosa.test", logging.WARNING, __file__, 1, "record %d %s", (number, "x" * (number % 37)), None
        )
        handler.handle(record)
    handler.close()


def files(directory: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(directory.iterdir())}


@pytest.mark.parametrize(("max_bytes", "backup_count"), [(300, 3), (300, 0), (0, 3), (1, 2), (4000, 5)])
def test_same_files_as_the_standard_rotating_handler(tmp_path: Path, max_bytes: int, backup_count: int) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    write_records(RotatingLogFile(str(ours / "lagent.log"), max_bytes, backup_count), 200)
    standard = logging.handlers.RotatingFileHandler(
        theirs / "lagent.log", maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
    )
    write_records(standard, 200)
    assert files(ours) == files(theirs)
    assert "lagent.log" in files(ours)
    if max_bytes and backup_count:
        assert "lagent.log.1" in files(ours) and len(files(ours)) <= backup_count + 1  # rotated, kept no more


def test_a_log_file_that_is_not_a_regular_file_is_never_rotated(tmp_path: Path) -> None:
    handler = RotatingLogFile("/dev/null", 10, 2)
    write_records(handler, 20)
    assert not Path("/dev/null.1").exists()


def test_open_handlers_gives_the_rotating_file_and_syslog_only_when_asked(tmp_path: Path) -> None:
    (handler,) = logs.open_handlers(LoggingConfig(filename=str(tmp_path / "a.log"), max_bytes=100, backup_count=1))
    assert isinstance(handler, RotatingLogFile) and (handler.max_bytes, handler.backup_count) == (100, 1)
    handler.close()
    assert logs.open_handlers(LoggingConfig(filename=None)) == []
