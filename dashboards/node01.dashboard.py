"""Example node dashboard, for grafanalib's ``generate-dashboard``:

    generate-dashboard -o dashboards/node01.json dashboards/node01.dashboard.py

``make-fructosa-dashboard`` writes one such file per host of an inventory
section; the panels are built in fructosa/dashboards/node.py.
"""

from fructosa.dashboards import Settings, node_dashboard

dashboard = node_dashboard("node01.cluster.example.org", Settings())
