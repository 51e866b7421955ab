"""lmaster's table of agents: who is connected, who was, and how they do.

One entry per host name (as its hello says), made on a connection's first
frame after the hello, so a peer that only says hello (or garbage after it)
leaves no trace. A reconnecting agent keeps its entry (and with it its
history: last data, samples). Hosts the previous run knew come back from the
status file, so a node that died while lmaster was down still shows up = 0
instead of simply vanishing. The table is bounded: past its size the
longest-silent agent is forgotten.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_KNOWN_AGENTS = 100_000
"""Agent table size; beyond it the longest-silent agent is forgotten."""


@dataclass
class AgentState:
    """What the master knows of one agent (by host name), for status and liveness."""

    host: str
    address: str = ""
    agent: str = ""
    connected: bool = False
    connected_since: float = 0.0
    last_frame: float = 0.0
    last_data: float = 0.0
    samples: int = 0
    samples_per_second: float = 0.0
    backlog: int = 0
    heartbeat_interval: float = 30.0
    facts: dict = field(default_factory=dict)
    """What the node is, from its hello (checked by :func:`fructosa.wire.protocol.check_facts`)."""
    _samples_at_last_report: int = 0

    def up(self, now: float) -> bool:
        """Connected and heard from within two heartbeats (plus slack)."""
        return self.connected and now - self.last_frame <= 2 * self.heartbeat_interval + 5


class AgentTable:
    """The agents by host name; see the module docstring."""

    def __init__(self, max_agents: int = MAX_KNOWN_AGENTS) -> None:
        self.max_agents = max_agents
        self._agents: dict[str, AgentState] = {}

    def __len__(self) -> int:
        return len(self._agents)

    def __iter__(self) -> Iterator[AgentState]:
        return iter(self._agents.values())

    def get(self, host: str) -> AgentState | None:
        return self._agents.get(host)

    def holds(self, state: AgentState) -> bool:
        """True when ``state`` is the table's entry for its host (registered, not forgotten)."""
        return self._agents.get(state.host) is state

    def register(self, state: AgentState) -> AgentState:
        """Put a (re)connected agent in the table, keeping what is known of it; the entry to update from now on."""
        known = self._agents.get(state.host)
        if known is not None:
            known.address, known.agent, known.connected = state.address, state.agent, True
            known.connected_since, known.last_frame = state.connected_since, state.last_frame
            known.heartbeat_interval, known.facts = state.heartbeat_interval, state.facts
            return known
        if len(self._agents) >= self.max_agents:  # forget the longest-silent one
            silent = min(self._agents.values(), key=lambda other: (other.connected, other.last_frame))
            del self._agents[silent.host]
        self._agents[state.host] = state
        return state

    def connected(self) -> int:
        return sum(state.connected for state in self._agents.values())

    def update_rates(self, interval: float) -> None:
        """Samples per second of every agent over the last ``interval`` seconds (called once per report)."""
        for state in self._agents.values():
            state.samples_per_second = (state.samples - state._samples_at_last_report) / interval
            state._samples_at_last_report = state.samples

    def load(self, status_file: str) -> None:
        """The hosts of the previous run's status file, disconnected, with when they last sent data.

        A missing or unreadable file is no error: the table simply starts empty.
        """
        try:
            with open(status_file, encoding="utf-8") as stream:
                previous = json.load(stream)
            for row in previous.get("agents", []):
                host = row.get("host")
                if isinstance(host, str) and host and len(self._agents) < self.max_agents:
                    self._agents[host] = AgentState(host=host, last_data=float(row.get("last_data") or 0))
        except (OSError, ValueError, TypeError, AttributeError):
            return
