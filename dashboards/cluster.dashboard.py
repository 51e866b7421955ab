"""Example cluster dashboard, for grafanalib's ``generate-dashboard``:

    generate-dashboard -o dashboards/cluster.json dashboards/cluster.dashboard.py

The hosts are section [hpc] of hosts.ini next to this file, as
``make-fructosa-dashboard dashboards/hosts.ini -s hpc`` reads them (and
writes this same cluster.json); the panels are built in
fructosa/dashboards/cluster.py.
"""

from pathlib import Path

from fructosa.dashboards import Settings, cluster_dashboard
from fructosa.dashboards.inventory import read_hosts

HOSTS = str(Path(__file__).with_name("hosts.ini"))

dashboard = cluster_dashboard("hpc", read_hosts(HOSTS, "hpc"), Settings())
