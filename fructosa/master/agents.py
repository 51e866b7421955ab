"""lmaster's table of agents: who is connected, who was, and how they do.

One entry per host name (as its hello says), made on a connection's first
frame after the hello, so a peer that only says hello (or garbage after it)
leaves no trace. A host may have several live connections at once (a
reconnect overlapping a connection not yet timed out, or any peer holding
the shared secret that says it is that host): the entry keeps one
:class:`AgentLink` per connection, and the host is up while ANY of them is
live, so a peer borrowing a connected agent's name and hanging up cannot
mark that agent down. A reconnecting agent keeps its entry (and with it its
history: last data, samples). Hosts the previous run knew come back from the
status file, so a node that died while lmaster was down still shows up = 0
instead of simply vanishing.

The table is bounded twice: past its size the longest-silent agent is
forgotten, and a host not heard from for ``[lmaster] forget agents after``
is forgotten too (:meth:`AgentTable.forget_silent`), so names invented by a
hostile peer stop getting liveness datapoints and leave the status file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

MAX_KNOWN_AGENTS = 100_000
"""Agent table size; beyond it the longest-silent agent is forgotten."""


@dataclass(eq=False)  # a connection is itself: two alike are still two
class AgentLink:
    """One live, authenticated connection of a host."""

    address: str
    agent: str = ""
    heartbeat_interval: float = 30.0
    connected_since: float = 0.0
    last_frame: float = 0.0
    facts: dict = field(default_factory=dict)
    """What the node said it is in this connection's hello."""
    held: bool = False
    """A batch of it waits for lmaster's sinks (back-pressure): the agent is there, lmaster is not reading."""

    def live(self, now: float) -> bool:
        """Heard from within two of its heartbeats (plus slack), or held back by lmaster itself."""
        return self.held or now - self.last_frame <= 2 * self.heartbeat_interval + 5


@dataclass
class AgentState:
    """What the master knows of one agent (by host name), for status and liveness."""

    host: str
    address: str = ""
    """Of its newest connection (or its last, once disconnected)."""
    agent: str = ""
    last_frame: float = 0.0
    """When any connection of the host last sent a frame (or ended): when it was last seen."""
    last_data: float = 0.0
    samples: int = 0
    samples_per_second: float = 0.0
    backlog: int = 0
    heartbeat_interval: float = 30.0
    """Of its newest connection."""
    links: list[AgentLink] = field(default_factory=list)
    """Its live connections, oldest first."""
    facts: dict = field(default_factory=dict)
    """What the node is, from its hello (checked by :func:`fructosa.wire.protocol.check_facts`)."""
    _samples_at_last_report: int = 0
    announced_up: bool | None = None
    """Liveness as the table's listeners were last told (None: never checked)."""
    liveness_paths: tuple[bytes, bytes] | None = field(default=None, repr=False, compare=False)
    """Its ``HOST.fructosa.up`` and ``HOST.fructosa.seconds_since_data`` as the reporter made them once
    (:func:`fructosa.master.report.liveness_paths`): the host of an entry never changes."""

    @property
    def connected(self) -> bool:
        return bool(self.links)

    @property
    def connected_since(self) -> float:
        """Since when the host has been connected without a break (0 when it is not)."""
        links = self.links
        if len(links) == 1:  # the usual case, asked of every agent at every report
            return links[0].connected_since
        return min((link.connected_since for link in links), default=0.0)

    def up(self, now: float) -> bool:
        """Some connection of the host is live: it sent a frame within two of its heartbeats (plus slack)."""
        for link in self.links:  # a loop, not any(genexpr): asked of every agent twice per report
            if link.live(now):
                return True
        return False


class AgentTable:
    """The agents by host name; see the module docstring."""

    def __init__(self, max_agents: int = MAX_KNOWN_AGENTS) -> None:
        self.max_agents = max_agents
        self._agents: dict[str, AgentState] = {}
        self.listeners: list[Callable[[AgentState, bool, float], None]] = []
        """Called ``(state, up, now)`` when a host's liveness changes (the live stream's agent events)."""
        self.forgetters: list[Callable[[str], None]] = []
        """Called with a host's name when the table forgets it, so what others keep about it goes too
        (lmaster's taps: otherwise invented names would fill the latest-value store's host rows)."""

    def __len__(self) -> int:
        return len(self._agents)

    def __iter__(self) -> Iterator[AgentState]:
        return iter(self._agents.values())

    def get(self, host: str) -> AgentState | None:
        return self._agents.get(host)

    def holds(self, state: AgentState) -> bool:
        """True when ``state`` is the table's entry for its host (registered, not forgotten)."""
        return self._agents.get(state.host) is state

    def heard(self, host: str, link: AgentLink, state: AgentState | None, now: float) -> AgentState:
        """A frame came on ``link``, a connection of ``host``: the host's entry from now on.

        ``state`` is what the previous frame of this connection returned (None
        on its first frame); the link is attached to the host's entry when it
        is not yet, also after the entry was forgotten meanwhile.
        """
        link.last_frame = now
        if state is None or not self.holds(state) or link not in state.links:
            state = self.attach(host, link)
            self.check_liveness(state, now)
        state.last_frame = now
        return state

    def attach(self, host: str, link: AgentLink) -> AgentState:
        """Count ``link`` as a live connection of ``host``, keeping what is known of the host."""
        state = self._agents.get(host)
        if state is None:
            if len(self._agents) >= self.max_agents:  # forget the longest-silent one
                silent = min(self._agents.values(), key=lambda other: (other.connected, other.last_frame))
                del self._agents[silent.host]
                self._forgotten(silent.host)
            state = self._agents[host] = AgentState(host=host)
        state.address, state.agent, state.heartbeat_interval = link.address, link.agent, link.heartbeat_interval
        if link.facts:
            state.facts = link.facts
        state.last_frame = max(state.last_frame, link.last_frame)
        state.links.append(link)
        return state

    def detach(self, state: AgentState, link: AgentLink, now: float) -> None:
        """The connection ``link`` of ``state``'s host ended; the host stays up while another is live."""
        if link in state.links:
            state.links.remove(link)
            state.last_frame = max(state.last_frame, now)
            self.check_liveness(state, now)

    def check_liveness(self, state: AgentState, now: float) -> bool:
        """Whether the host is up; the listeners hear of it when that changed since the last check.

        Checked when a connection starts or ends and at every liveness report
        (a connection gone silent); a host known only from the status file
        starts down without a word.
        """
        up = state.up(now)
        previous, state.announced_up = state.announced_up, up
        if up != previous and (up or previous is not None):
            for listener in self.listeners:
                listener(state, up, now)
        return up

    def connected(self) -> int:
        return sum(state.connected for state in self._agents.values())

    def forget_silent(self, now: float, after: float) -> list[str]:
        """Forget the hosts without a connection and not heard from for ``after`` seconds; their names."""
        forgotten = [host for host, state in self._agents.items() if not state.links and now - state.last_frame > after]
        for host in forgotten:
            del self._agents[host]
            self._forgotten(host)
        return forgotten

    def _forgotten(self, host: str) -> None:
        for forget in self.forgetters:
            forget(host)

    def update_rates(self, interval: float) -> None:
        """Samples per second of every agent over the last ``interval`` seconds (called once per report)."""
        for state in self._agents.values():
            state.samples_per_second = (state.samples - state._samples_at_last_report) / interval
            state._samples_at_last_report = state.samples

    def load(self, status_file: str) -> None:
        """The hosts of the previous run's status file, disconnected, with when they were last seen and sent data.

        A host the file does not say when it was last seen (a file of an older
        lmaster) counts as seen now. A missing or unreadable file is no error:
        the table simply starts empty.
        """
        now = time.time()
        try:
            with open(status_file, encoding="utf-8") as stream:
                previous = json.load(stream)
            for row in previous.get("agents", []):
                host = row.get("host")
                if isinstance(host, str) and host and len(self._agents) < self.max_agents:
                    last_data = float(row.get("last_data") or 0)
                    seen = float(row.get("last_seen") or 0) or last_data or now
                    self._agents[host] = AgentState(host=host, last_data=last_data, last_frame=seen)
        except (OSError, ValueError, TypeError, AttributeError):
            return
