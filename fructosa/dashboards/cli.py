"""``make-fructosa-dashboard``: Grafana dashboards for an inventory section.

Writes ``HOST.json`` for every host of the section and ``cluster.json`` for
all of them, in the JSON layout grafanalib's ``generate-dashboard`` writes,
ready for Grafana's "Import dashboard". With ``--agent-config`` only the
panels that configuration's sensors and options feed are drawn. Exit status
0, 1 when a file cannot be written, 2 for a bad hosts file, agent
configuration or option (one line on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..config import ConfigError, load_agent_config
from ..sensors.slurm import SlurmJobs
from .cluster import cluster_dashboard
from .feeds import EVERYTHING, Feeds
from .inventory import InventoryError, read_hosts
from .jobs import job_dashboard
from .rendering import NodeDashboards, dashboard_text
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
        "--agent-config",
        metavar="FILE",
        help="the lagent.conf the hosts run: draw only the panels its sensors and options feed, with no panel, "
        "row or gauge for a sensor it does not run or an option it leaves off (per CPU, disk, NIC, user); "
        "default: every panel",
    )
    parser.add_argument(
        "--gpu-section",
        metavar="SECTION",
        help="section of HOSTS listing the hosts with GPUs: a GPU row on their dashboards and the cluster's "
        "(with --agent-config, if it runs the GPU sensor)",
    )
    parser.add_argument(
        "--jobs",
        action="store_true",
        help=f"also write {JOBS}.json: one Slurm job ($job) on every node it ran on "
        "(with --agent-config, if it runs the SlurmJobs sensor)",
    )
    parser.add_argument("--time-from", default="3h", metavar="DURATION", help="default time range (default: 3h)")
    parser.add_argument("--refresh", default="1m", metavar="DURATION", help="auto-refresh, or off (default: 1m)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def agent_feeds(path: str) -> Feeds:
    """What an lagent.conf sends; its warnings (say, an unknown sensor
    section, which the agent ignores too) go to stderr. A file without
    sensors is an error: every dashboard would be empty."""
    config = load_agent_config(path)
    if not config.sensors:
        raise ConfigError(f"{path}: no [sensor:NAME] section: the agent sends nothing to draw")
    for warning in config.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    return Feeds.from_agent_config(config)


def write(text: str, path: Path) -> None:
    """Write atomically, so Grafana provisioning never reads half a file."""
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(partial, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def fail(message: str, status: int = 2) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return status

    try:
        feeds = agent_feeds(args.agent_config) if args.agent_config else EVERYTHING
        settings = Settings.from_options(args.prefix, args.time_from, args.refresh, feeds)
        hosts = read_hosts(args.hosts, args.section)
        with_gpus = set(read_hosts(args.hosts, args.gpu_section)) if args.gpu_section else set()
    except (ConfigError, InventoryError, ValueError) as error:
        return fail(str(error))
    if CLUSTER in hosts:
        return fail(f"{args.hosts}: a host named {CLUSTER!r} would overwrite {CLUSTER}.json")
    if args.jobs and JOBS in hosts:
        return fail(f"{args.hosts}: a host named {JOBS!r} would overwrite {JOBS}.json (--jobs)")
    jobs = args.jobs and feeds.runs(SlurmJobs.name)
    if args.jobs and not jobs:
        print(
            f"{PROG}: {args.agent_config} runs no SlurmJobs sensor: {JOBS}.json not written (--jobs)", file=sys.stderr
        )
    output = Path(args.output)
    try:
        output.mkdir(parents=True, exist_ok=True)
        nodes = NodeDashboards(settings)
        for host in hosts:
            write(nodes.text(host, gpus=host in with_gpus), output / f"{host}.json")
        gpu_hosts = [host for host in hosts if host in with_gpus]
        cluster = cluster_dashboard(args.cluster or args.section, hosts, settings, gpu_hosts)
        write(dashboard_text(cluster), output / f"{CLUSTER}.json")
        if jobs:
            write(dashboard_text(job_dashboard(settings)), output / f"{JOBS}.json")
    except OSError as error:
        return fail(f"{error.filename or output}: cannot write: {error.strerror or error}", 1)
    extra = f", {JOBS}.json" if jobs else ""
    print(f"{len(hosts)} node dashboards{extra} and {CLUSTER}.json written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
