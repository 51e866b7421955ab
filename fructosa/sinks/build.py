"""Which sinks a configuration asks for.

``[Graphite]`` (unless ``enabled = no``) gives one carbon, or a carbon
cluster hashed like carbon's consistent-hashing relay when it names several
destinations or replicates; ``[upstream]`` adds the sink to the lmaster
this one relays to. New sinks join here, so lmaster itself never names a
sink class.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from ..graphite_paths import short_hostname
from ..spool import Spool
from ..wire import auth
from . import Sink
from .carbon import CarbonPickleSink
from .cluster import CarbonClusterSink
from .ring import ConsistentHashRing
from .upstream import UpstreamSink

if TYPE_CHECKING:
    from ..config import GraphiteConfig, MasterConfig, UpstreamConfig


def build_sinks(cfg: MasterConfig, spool: Spool | None = None) -> list[Sink]:
    """The sinks of ``cfg``, in delivery order; ``spool`` keeps carbon's share while carbon is away.

    Raises OSError or ssl.SSLError when the ``[upstream]`` TLS files are unusable.
    """
    sinks: list[Sink] = []
    if cfg.graphite.enabled:
        sinks.append(carbon_sink(cfg.graphite, spool))
    if cfg.upstream is not None:
        sinks.append(upstream_sink(cfg.upstream, cfg.graphite))
    return sinks


def carbon_sink(graphite: GraphiteConfig, spool: Spool | None) -> Sink:
    """One carbon, or a carbon cluster hashed like carbon's consistent-hashing relay."""
    if len(graphite.destinations) > 1 or graphite.replication_factor > 1:
        ring = ConsistentHashRing(graphite.destinations, graphite.replication_factor, graphite.diverse_replicas)
        return CarbonClusterSink(
            ring, graphite.prefix, graphite.max_queued_datapoints, spool, graphite.resend_window,
            graphite.max_queued_bytes,
        )  # fmt: skip
    (destination,) = graphite.destinations
    return CarbonPickleSink(
        destination.host, destination.port, graphite.prefix, graphite.max_queued_datapoints, spool,
        graphite.resend_window, graphite.max_queued_bytes,
    )  # fmt: skip


def upstream_sink(upstream: UpstreamConfig, graphite: GraphiteConfig | None = None) -> UpstreamSink:
    """The sink to the lmaster this one relays to, as this host (TLS when any TLS setting asks for it);
    its memory queue has ``[Graphite]``'s bounds."""
    link = upstream.link
    tls = auth.client_context_for(link)
    sink = UpstreamSink(upstream.host, upstream.port, short_hostname(socket.gethostname()), link.secret, tls)
    if graphite is not None:
        sink.max_queued, sink.max_queued_bytes = graphite.max_queued_datapoints, graphite.max_queued_bytes
    return sink
