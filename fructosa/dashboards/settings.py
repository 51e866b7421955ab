"""What the command line can change in every dashboard, checked once."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..graphite_paths import is_valid_path
from .feeds import EVERYTHING, Feeds

_DURATION = re.compile(r"^[1-9][0-9]*[smhdwMy]$")


@dataclass(frozen=True)
class Settings:
    """``prefix``: lmaster's ``[Graphite] prefix``; ``time_from``: Grafana's
    default range start (``now-3h``); ``refresh``: auto-refresh (``""`` off);
    ``feeds``: what the agents send (``--agent-config``; default everything),
    so that only panels with data are drawn."""

    prefix: str = ""
    time_from: str = "now-3h"
    refresh: str = "1m"
    feeds: Feeds = EVERYTHING

    def __post_init__(self) -> None:
        if self.prefix and not is_valid_path(self.prefix):
            raise ValueError(f"prefix {self.prefix!r}: dot-separated words of letters, digits, _ and -")
        if not _DURATION.match(self.time_from.removeprefix("now-")):
            given = self.time_from.removeprefix("now-")
            raise ValueError(f"time range {given!r}: a duration such as 3h, 30m or 7d")
        if self.refresh and not _DURATION.match(self.refresh):
            raise ValueError(f"refresh {self.refresh!r}: a duration such as 30s or 1m, or off")

    @classmethod
    def from_options(cls, prefix: str, time_from: str, refresh: str, feeds: Feeds = EVERYTHING) -> Settings:
        """From command-line text: ``3h`` means ``now-3h``, ``off`` no refresh."""
        time_from = time_from.strip()
        refresh = refresh.strip()
        return cls(
            prefix=prefix.strip().strip("."),
            time_from=time_from if time_from.startswith("now-") else f"now-{time_from}",
            refresh="" if refresh.lower() in ("off", "0", "") else refresh,
            feeds=feeds,
        )
