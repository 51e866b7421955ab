"""A live pipeline for the dashboard tests and the README picture.

carbon-cache and graphite-web (tests/support/carbon.py), lmaster, and two
real agents (tests/support/daemons.py): this host's, and a second one named
``gone01`` with a few sensors, which the tests stop to have a node that
stopped reporting. This host's agent runs either all 20 sensors every
second with the options that create per-instance series, or a given
lagent.conf (conf/lagent.conf as shipped) with only what a test must change
(:func:`shipped_agent_config`). ``gone01`` sends the options conf/lagent.conf
leaves off: DiskUsage with several paths (the other shape of that sensor's
paths), per-CPU frequencies, the CPUPercent total. Everything lives in
``workdir``.
"""

from __future__ import annotations

import configparser
import json
import socket
import urllib.parse
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from whisper import CorruptWhisperFile

from fructosa.graphite_paths import short_hostname
from fructosa.sensors import REGISTRY
from tests.support.carbon import CarbonCache, GraphiteWeb, free_ports
from tests.support.daemons import Daemon, rewrite_ini
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
SHIPPED_AGENT_CONFIG = REPO / "conf" / "lagent.conf"
"""The example lagent.conf, which the live dashboard test runs as shipped."""
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

GONE_SENSORS: dict[str, dict[str, str]] = {
    "CPUPercent": {"total": "yes"},
    "VirtualMemory": {},
    "DiskUsage": {"path": "/ /tmp"},
    "CPUFreq": {"percpu": "yes"},
}


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


def shipped_agent_config(source: Path, workdir: Path, master_port: int) -> Path:
    """``source`` with only what a test must change: lmaster's address, the
    spool, the log file, and every sensor's ``time_interval`` (1 s, so that
    sensors sampled every 5 minutes report within the test). Every other
    byte, every sensor section and option among them, stays as it is."""
    text = source.read_text(encoding="utf-8")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    changes = {
        ("lmaster", "host"): "127.0.0.1",
        ("lmaster", "incoming data port"): str(master_port),
        ("lagent", "spool dir"): str(workdir / "spool"),
        ("logging", "filename"): str(workdir / "lagent.log"),
    }
    changes |= {(section, "time_interval"): "1" for section in parser.sections() if section.startswith("sensor:")}
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "lagent.conf"
    path.write_text(rewrite_ini(text, changes), encoding="utf-8")
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
    (``gone=False``: without the gone01 agent; ``host_config``: this host's
    agent runs that lagent.conf as shipped instead of every sensor)."""

    def __init__(self, workdir: Path, gone: bool = True, host_config: Path | None = None) -> None:
        self.workdir = workdir
        self.gone = gone
        self.host_config = host_config
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
            host_dir = self.workdir / f"lagent-{HOST}"
            if self.host_config is None:
                configs = {HOST: agent_config(host_dir, port, every_sensor)}
            else:
                configs = {HOST: shipped_agent_config(self.host_config, host_dir, port)}
            if self.gone:
                configs[GONE] = agent_config(self.workdir / f"lagent-{GONE}", port, GONE_SENSORS, GONE)
            for name, config in configs.items():
                agent = Daemon("lagent", config, config.parent)
                self.agents[name] = self._stack.enter_context(agent.start())
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def agent_config(self, host: str) -> Path:
        """The lagent.conf the agent of ``host`` runs."""
        return self.workdir / f"lagent-{host}" / "lagent.conf"

    def sensors_seen(self, host: str) -> set[str]:
        return {path.split(".")[1] for path in self.carbon.metric_paths() if path.split(".")[0] == host}

    def wait_for_sensors(self, host: str, sensors: set[str], points: int, timeout: float = 90.0) -> None:
        """Until every sensor of ``sensors`` has ``points`` values in whisper in one of its paths.

        Any one of its paths: some come and go with the machine's state (a TCP state no socket is in for a
        while, the job of a Slurm test running alongside, a process that drops out of the top list), so
        a path chosen by name may never collect ``points`` values on a busy machine. The deadline is for
        all of them together and long: on a loaded machine the agent and carbon-cache fall behind.
        """
        counts: dict[str, int] = {}

        def missing() -> list[str]:
            for path in sorted(self.carbon.metric_paths()):
                name, sensor = path.split(".")[:2]
                if name != host or sensor not in sensors or counts.get(sensor, 0) >= points:
                    continue
                try:
                    counts[sensor] = max(counts.get(sensor, 0), len(self.carbon.series(path)))
                except (FileNotFoundError, CorruptWhisperFile):
                    continue  # not created yet, or caught mid-creation
            return sorted(sensor for sensor in sensors if counts.get(sensor, 0) < points)

        wait_for(lambda: not missing(), timeout, f"{host}: {points} values from each of {len(sensors)} sensors",
                 interval=0.5, describe=lambda: {sensor: counts.get(sensor, 0) for sensor in missing()})  # fmt: skip

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
