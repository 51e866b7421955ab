"""Alarms added at run time (HTTP API, ``fructosa-alarms``), kept across restarts.

One JSON file, ``alarms.json`` in the state directory, rewritten whole at
every change: written to a temporary file in the same directory, flushed
and fsync'ed, renamed over the old one (atomic on POSIX), then the
directory is fsync'ed. A kill -9 at any moment leaves the old file or the
new one, never a half-written one; a leftover temporary file is ignored.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import tempfile
from collections.abc import Iterable

from .rules import Rule, RuleError, from_json

log = logging.getLogger(__name__)

FILE_NAME = "alarms.json"


class StoreError(OSError):
    """The state directory cannot be used; the message says which and why."""


class AlarmStore:
    """See the module docstring; ``directory`` None keeps nothing (alarms live until lmaster stops)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILE_NAME) if directory else None

    def load(self) -> list[Rule]:
        """The stored rules; one that no longer checks is logged and skipped; a killed write's leftover goes."""
        if self.path is None or self.directory is None or not os.path.exists(self.path):
            return []
        for leftover in glob.glob(os.path.join(glob.escape(self.directory), ".alarms-*.tmp")):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        try:
            with open(self.path, encoding="utf-8") as stream:
                data = json.load(stream)
        except (OSError, ValueError) as error:
            raise StoreError(f"{self.path}: cannot read the stored alarms: {error}") from None
        rules = []
        for entry in data.get("alarms", []) if isinstance(data, dict) else []:
            try:
                rules.append(from_json(entry))
            except (RuleError, AttributeError) as error:
                log.warning("%s: stored alarm %r skipped: %s", self.path, str(entry)[:100], error)
        return rules

    def save(self, rules: Iterable[Rule]) -> None:
        if self.path is None or self.directory is None:
            return
        text = json.dumps({"alarms": [rule.to_json() for rule in rules]}, indent=1, sort_keys=True)
        try:
            os.makedirs(self.directory, mode=0o750, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(prefix=".alarms-", suffix=".tmp", dir=self.directory)
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                    stream.write(text)
                    stream.flush()
                    os.fsync(stream.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as error:
            raise StoreError(f"{self.directory}: cannot store the alarms: {error.strerror or error}") from None
