"""A live pipeline for the dashboard tests and the README picture.

carbon-cache and graphite-web (tests/support/carbon.py), lmaster, and two
real agents (tests/support/daemons.py): this host's, running all 20 sensors
every second with the options that create per-instance series, and a second
one named ``gone01`` with a few sensors, which the tests stop to have a node
that stopped reporting. ``gone01`` also sends DiskUsage with one path, the
other shape of that sensor's paths. Everything lives in ``workdir``.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from fructosa.graphite_paths import short_hostname
from fructosa.sensors import REGISTRY
from tests.support.carbon import CarbonCache, GraphiteWeb, free_ports
from tests.support.daemons import Daemon

HOST = short_hostname(socket.gethostname())
"""The name this host's agent sends (it runs without ``[lagent] hostname``)."""
GONE = "gone01"

SENSOR_OPTIONS: dict[str, dict[str, str]] = {
    "CPUPercent": {"percpu": "yes", "total": "yes"},
    "CPUTimes": {"percpu": "yes"},
    "CPUTimesPercent": {"percpu": "yes"},
    "CPUFreq": {"percpu": "yes"},
    "DiskUsage": {"path": "/ /tmp"},
    "DiskIOCounters": {"perdisk": "yes"},
    "NetIOCounters": {"pernic": "yes"},
    "Users": {"per_user": "yes"},
}
"""This host's options beyond the defaults: per CPU, mount point, disk, NIC, user."""

GONE_SENSORS: dict[str, dict[str, str]] = {"CPUPercent": {}, "VirtualMemory": {}, "DiskUsage": {}}


def agent_config(workdir: Path, master_port: int, sensors: dict[str, dict[str, str]], hostname: str = "") -> Path:
    """An lagent.conf sampling ``sensors`` every second."""
    lines = [
        f"[lmaster]\nhost = 127.0.0.1\nincoming data port = {master_port}\n",
        f"[lagent]\nspool dir = {workdir / 'spool'}\n" + (f"hostname = {hostname}\n" if hostname else ""),
        f"[logging]\nfilename = {workdir / 'lagent.log'}\nlevel = INFO\n",
    ]
    for name, options in sensors.items():
        lines.append(f"[sensor:{name}]\ntime_interval = 1\n" + "".join(f"{k} = {v}\n" for k, v in options.items()))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "lagent.conf"
    path.write_text("\n".join(lines))
    return path


def master_config(workdir: Path, master_port: int, carbon: CarbonCache) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "lmaster.conf"
    path.write_text(
        f"[lmaster]\nhost = 127.0.0.1\nincoming data port = {master_port}\nspool dir = {workdir / 'spool'}\n\n"
        f"[Graphite]\nhost = 127.0.0.1\ncarbon receiver pickle port = {carbon.pickle_port}\n"
        f"carbon receiver plaintext port = {carbon.line_port}\n\n"
        f"[logging]\nfilename = {workdir / 'lmaster.log'}\nlevel = INFO\n"
    )
    return path


class Pipeline:
    """``with Pipeline(tmp) as live:`` everything started, stopped on exit
    (``gone=False``: without the gone01 agent)."""

    def __init__(self, workdir: Path, gone: bool = True) -> None:
        self.workdir = workdir
        self.gone = gone
        self.carbon = CarbonCache(workdir / "carbon")
        self.graphite = GraphiteWeb(self.carbon)
        self.agents: dict[str, Daemon] = {}
        self._stack = ExitStack()

    def __enter__(self) -> Pipeline:
        try:
            self._stack.enter_context(self.carbon)
            self._stack.enter_context(self.graphite)
            (port,) = free_ports(1)
            master_dir = self.workdir / "lmaster"
            master = Daemon("lmaster", master_config(master_dir, port, self.carbon), master_dir)
            self._stack.enter_context(master.start(listen_port=port))
            every_sensor = {name: SENSOR_OPTIONS.get(name, {}) for name in REGISTRY}
            agents = [(HOST, every_sensor, "")] + ([(GONE, GONE_SENSORS, GONE)] if self.gone else [])
            for name, sensors, hostname in agents:
                agent_dir = self.workdir / f"lagent-{name}"
                agent = Daemon("lagent", agent_config(agent_dir, port, sensors, hostname), agent_dir)
                self.agents[name] = self._stack.enter_context(agent.start())
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def sensors_seen(self, host: str) -> set[str]:
        return {path.split(".")[1] for path in self.carbon.metric_paths() if path.split(".")[0] == host}

    def wait_for_sensors(self, host: str, sensors: set[str], points: int, timeout: float = 30.0) -> None:
        """Until every sensor of ``sensors`` has ``points`` values of one path in whisper."""
        deadline = time.monotonic() + timeout
        while not sensors <= self.sensors_seen(host):
            if time.monotonic() > deadline:
                raise AssertionError(f"{host}: no data from {sorted(sensors - self.sensors_seen(host))}")
            time.sleep(0.2)
        mine = sorted(path for path in self.carbon.metric_paths() if path.split(".")[0] == host)
        by_sensor = {path.split(".")[1]: path for path in mine}
        for sensor in sorted(sensors):
            self.carbon.wait_for(by_sensor[sensor], lambda s: len(s) >= points, timeout=timeout)

    def find(self, query: str) -> list[str]:
        """Node names of graphite-web's ``/metrics/find``, where Grafana gets variable values.

        ``format=json``: Grafana's default treejson needs graphite-web's user
        database, which the harness does not create; both run the same find.
        """
        url = f"{self.graphite.url}/metrics/find?" + urllib.parse.urlencode({"query": query, "format": "json"})
        with urllib.request.urlopen(url, timeout=10) as response:
            return [node["path"].rsplit(".", 1)[-1] for node in json.load(response)]

    def render_png(
        self, targets: list[str], title: str, width: int, height: int, from_: str, options: dict[str, str]
    ) -> bytes:
        """graphite-web's own picture of ``targets`` (``/render?format=png``)."""
        query = (
            [("target", target) for target in targets]
            + [*options.items()]
            + [
                ("format", "png"),
                ("width", str(width)),
                ("height", str(height)),
                ("from", from_),
                ("title", title),
                ("bgcolor", "white"),
                ("fgcolor", "black"),
                ("majorGridLineColor", "999999"),
                ("minorGridLineColor", "dddddd"),
                ("lineWidth", "2"),
                ("hideLegend", "false"),
            ]
        )
        with urllib.request.urlopen(f"{self.graphite.url}/render?{urllib.parse.urlencode(query)}", timeout=30) as r:
            return r.read()
