"""``make-fructosa-dashboard``: Grafana dashboards for an inventory section.

Writes ``HOST.json`` for every host of the section and ``cluster.json`` for
all of them, in the JSON layout grafanalib's ``generate-dashboard`` writes,
ready for Grafana's "Import dashboard". Exit status 0, 1 when a file cannot
be written, 2 for a bad hosts file or option (one line on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from grafanalib._gen import write_dashboard
from grafanalib.core import Dashboard

from .. import __version__
from .cluster import cluster_dashboard
from .inventory import InventoryError, read_hosts
from .jobs import job_dashboard
from .node import node_dashboard
from .settings import Settings

PROG = "make-fructosa-dashboard"
CLUSTER = "cluster"
JOBS = "jobs"
"""The cluster dashboard is ``cluster.json``, so no host may be called that."""


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write Grafana dashboards (JSON) for the FrUCToSA hosts of an Ansible inventory section.",
    )
    parser.add_argument("hosts", metavar="HOSTS", help="hosts file in Ansible INI inventory style")
    parser.add_argument("-s", "--section", default="hosts", help="section of HOSTS to read (default: hosts)")
    parser.add_argument("-o", "--output", default=".", metavar="DIR", help="where to write (default: here)")
    parser.add_argument("--cluster", metavar="NAME", help="name in the cluster dashboard's title (default: SECTION)")
    parser.add_argument("--prefix", default="", help="lmaster's [Graphite] prefix, if it sets one")
    parser.add_argument(
        "--gpu-section",
        metavar="SECTION",
        help="section of HOSTS listing the hosts with GPUs: a GPU row on their dashboards and the cluster's",
    )
    parser.add_argument(
        "--jobs", action="store_true", help=f"also write {JOBS}.json: one Slurm job ($job) on every node it ran on"
    )
    parser.add_argument("--time-from", default="3h", metavar="DURATION", help="default time range (default: 3h)")
    parser.add_argument("--refresh", default="1m", metavar="DURATION", help="auto-refresh, or off (default: 1m)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def write(dashboard: Dashboard, path: Path) -> None:
    """Write atomically, so Grafana provisioning never reads half a file."""
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", encoding="utf-8") as stream:
        write_dashboard(dashboard, stream)
    os.replace(partial, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def fail(message: str, status: int = 2) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return status

    try:
        settings = Settings.from_options(args.prefix, args.time_from, args.refresh)
        hosts = read_hosts(args.hosts, args.section)
        with_gpus = set(read_hosts(args.hosts, args.gpu_section)) if args.gpu_section else set()
    except (InventoryError, ValueError) as error:
        return fail(str(error))
    if CLUSTER in hosts:
        return fail(f"{args.hosts}: a host named {CLUSTER!r} would overwrite {CLUSTER}.json")
    if args.jobs and JOBS in hosts:
        return fail(f"{args.hosts}: a host named {JOBS!r} would overwrite {JOBS}.json (--jobs)")
    output = Path(args.output)
    try:
        output.mkdir(parents=True, exist_ok=True)
        for host in hosts:
            write(node_dashboard(host, settings, gpus=host in with_gpus), output / f"{host}.json")
        gpu_hosts = [host for host in hosts if host in with_gpus]
        cluster = cluster_dashboard(args.cluster or args.section, hosts, settings, gpu_hosts)
        write(cluster, output / f"{CLUSTER}.json")
        if args.jobs:
            write(job_dashboard(settings), output / f"{JOBS}.json")
    except OSError as error:
        return fail(f"{error.filename or output}: cannot write: {error.strerror or error}", 1)
    extra = f", {JOBS}.json" if args.jobs else ""
    print(f"{len(hosts)} node dashboards{extra} and {CLUSTER}.json written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
