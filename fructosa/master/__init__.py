"""lmaster: accepts agents, checks their datapoint blocks, feeds the sinks and taps.

Agents flatten their samples into Graphite datapoints themselves and send
them as blocks (``D`` frames); lmaster checks each block (as a whole, and
datapoint by datapoint only when that fails) and hands the valid datapoints
on. Simple third-party senders may send samples (``S`` frames) instead,
which lmaster decodes with a restricted unpickler and flattens with the
bounded walk. Anything a peer sends is checked before use: the number of
connections, frame lengths before the payload is read, the hello (and with
a shared secret its HMAC) before any batch.

A batch is acknowledged only once every sink holds it safely (written to
carbon, or to the disk spool, or acknowledged by the upstream lmaster); a
batch id its host sent before is acknowledged without being relayed again. Taps see
every checked block but are never waited for.

The parts:

* :mod:`.lmaster`: :class:`Master`, the parts put together, and run/stop/reload;
* :mod:`.server`: accepting connections, connection limits, the per-connection frame loop;
* :mod:`.agents`: the agent table (``lmaster status``), remembered across restarts;
* :mod:`.flow`: duplicate detection, checking, and the fan-out to sinks and taps;
* :mod:`.report`: the status file, per-node liveness (``HOST.fructosa.up``,
  ``HOST.fructosa.seconds_since_data``) and self-metrics (``fructosa.lmaster.HOST.*``).

The opening handshake, acknowledgements and the batch ledger are the server
half of :mod:`fructosa.wire.session`; the sinks live in :mod:`fructosa.sinks`,
the taps in :mod:`fructosa.taps`.
"""

from .agents import AgentLink, AgentState, AgentTable
from .flow import Flow, decode_batch
from .lmaster import Master
from .server import AgentServer, Limits, heartbeat_backlog

__all__ = [
    "AgentLink",
    "AgentServer",
    "AgentState",
    "AgentTable",
    "Flow",
    "Limits",
    "Master",
    "decode_batch",
    "heartbeat_backlog",
]
