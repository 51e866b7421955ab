"""The HTTP API's view of lmaster's agent table: each agent entry as a :class:`~fructosa.http.state.NodeRecord`.

The API reads nodes through the :class:`~fructosa.http.state.NodeSource`
protocol only, so the agent table can change without the handlers noticing.
Records are built when a request asks (cheap: a few attribute copies per
agent) instead of being kept in step with every frame, which would put work
on the relay's path for nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..http.state import NodeRecord
from .agents import AgentState, AgentTable


class AgentNodes:
    """A :class:`~fructosa.http.state.NodeSource` over lmaster's :class:`~.agents.AgentTable`."""

    def __init__(self, agents: AgentTable) -> None:
        self.agents = agents

    def nodes(self) -> Iterable[NodeRecord]:
        return [node_record(state) for state in self.agents]

    def node(self, hostname: str) -> NodeRecord | None:
        state = self.agents.get(hostname)
        return None if state is None else node_record(state)


def node_record(state: AgentState) -> NodeRecord:
    """One agent entry as the API shows it; zeros (never connected, known from the status file) become None."""
    facts = state.facts
    return NodeRecord(
        hostname=state.host,
        ip_address=state.address.rsplit(":", 1)[0] or None if state.address else None,
        connected=state.connected,
        last_seen=state.last_frame or None,
        heartbeat_interval=state.heartbeat_interval,
        agent=state.agent or None,
        connected_since=state.connected_since or None,
        sensors=dict(facts.get("sensors", {})),
        cpu=facts.get("cpu"),
        cpus=facts.get("cpus"),
        memory_bytes=facts.get("memory_bytes"),
        boot_time=facts.get("boot_time"),
        system=facts.get("system"),
        platform=facts.get("platform"),
        gpus=gpu_models(facts),
    )


def gpu_models(facts: dict) -> list[str]:
    """One name per board: the agent's ``gpu_models``, or as many ``unknown`` as its ``gpus`` count says."""
    models = facts.get("gpu_models")
    if models is not None:
        return list(models)
    return ["unknown"] * min(facts.get("gpus", 0), 64)
