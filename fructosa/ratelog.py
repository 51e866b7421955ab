"""A log that a flapping or hostile peer cannot flood.

A brick of its own (standard library only), so the sinks and the wire can
use it without pulling in the logging set-up and, through it, the
configuration and the sensors.
"""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """Logs a message once per key (e.g. a peer address) per ``period`` seconds.

    A flapping or hostile peer must not flood the log; the count of
    suppressed repeats is reported with the next message that gets through.
    """

    def __init__(self, logger: logging.Logger, period: float = 300.0, max_keys: int = 10_000) -> None:
        self.logger = logger
        self.period = period
        self.max_keys = max_keys
        self._last: dict[object, tuple[float, int]] = {}

    def log(self, level: int, key: object, message: str, *args: object) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self.period:
            self._last[key] = (last, suppressed + 1)
            return
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = (now, 0)
        if suppressed:
            message += f" ({suppressed} similar messages suppressed)"
        self.logger.log(level, message, *args)
