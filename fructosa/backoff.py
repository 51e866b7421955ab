"""Reconnect delays shared by the agent (→ master) and the sinks (→ carbon)."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with jitter, so a restarted master is not hit by
    every agent of the cluster in the same second."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.current = initial

    def next_delay(self) -> float:
        delay = self.current * random.uniform(0.5, 1.0)
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial
