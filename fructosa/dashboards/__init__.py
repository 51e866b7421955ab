"""Grafana dashboards for FrUCToSA, built with grafanalib.

``node_dashboard(host)`` shows one node, ``cluster_dashboard(name, hosts)``
all of them; ``make-fructosa-dashboard`` (:mod:`.cli`) writes both for an
Ansible inventory section. Every Graphite path in them comes from
:mod:`.metrics` through :func:`fructosa.graphite_paths.metric_pattern`;
``Settings.feeds`` (:mod:`.feeds`, ``--agent-config``) limits them to what
an agent configuration sends.
"""

from .cluster import cluster_dashboard
from .node import node_dashboard
from .settings import Settings

__all__ = ["Settings", "cluster_dashboard", "node_dashboard"]
