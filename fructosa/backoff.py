"""Reconnect delays shared by the agent (→ master) and the sinks (→ carbon)."""

from __future__ import annotations

import os


class Backoff:
    """Exponential backoff with jitter, so a restarted master is not hit by
    every agent of the cluster in the same second."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.current = initial

    def next_delay(self) -> float:
        delay = self.current * jitter()
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial


def jitter() -> float:
    """A factor uniform in [0.5, 1.0), from the system's random bytes: a
    reconnect is rare, and the ``random`` module (with ``bisect`` and SHA-512)
    would stay in every agent's memory for this one call."""
    return 0.5 + int.from_bytes(os.urandom(7), "big") / (1 << 57)
