"""Every target of every generated panel returns real data from a live Graphite.

The pipeline of tests/dashboards/pipeline.py runs (carbon-cache,
graphite-web, lmaster, this host's agent with conf/lagent.conf as shipped,
only lmaster's address, spool, log file and sensor intervals changed, and
agent ``gone01``, stopped early); ``make-fructosa-dashboard --agent-config
conf/lagent.conf`` writes the dashboards for both hosts, and each target,
with its template variables substituted as Grafana would, goes to
graphite-web's ``/render?format=json``.

A target may come back empty only when every metric it reads is one this
host cannot produce, decided by measuring here with the agent's own
configuration and code, not by looking at Graphite:

* the sensor is unsupported here (no temperature sensors, fans or battery
  in a VM; no cpufreq in some): the Sensors row, and CPU frequency;
* the metric exists only sometimes (``Metric.sometimes``: sessions per user
  with nobody logged in, battery time left on mains power) and the
  measurement here has no such value.

Options never excuse a target: the dashboards draw only what the shipped
configuration sends, so a target the agent does not feed is a failure, as
is a wrong path of a sensor that works here. Each declared metric is also
checked alone where one of the two agents sends it (``gone01`` sends the
shapes the shipped options leave off, such as several DiskUsage paths).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fructosa.config import load_agent_config
from fructosa.dashboards import Settings, cluster_dashboard, node_dashboard
from fructosa.dashboards import metrics as m
from fructosa.dashboards.cli import main
from fructosa.dashboards.feeds import Feeds
from fructosa.dashboards.metrics import Metric
from fructosa.dashboards.queries import HOST_VARIABLE, Scope
from fructosa.graphite_paths import Glob, metric_pattern, sample_to_datapoints
from fructosa.sensors import REGISTRY, SensorUnsupported
from tests.dashboards.helpers import expand_braces, glob_matches, json_panels, model_targets
from tests.dashboards.pipeline import GONE, GONE_SENSORS, HOST, SHIPPED_AGENT_CONFIG, Pipeline
from tests.support.carbon import GraphiteWeb

pytestmark = pytest.mark.skipif(
    not GraphiteWeb.is_available(), reason="graphite-web not installed (pip install graphite-web==1.1.10)"
)

MISSING_AFTER = "10s"
"""``$missing_after`` here: gone01 is missing 10 s after its agent stopped."""
VARIABLE = re.compile(r"\$\{?[A-Za-z_]")
"""A Grafana template variable (a regex's ``$`` is no variable)."""
MAY_BE_UNSUPPORTED = {"SensorsTemperatures", "SensorsFans", "SensorsBattery", "CPUFreq", "GPU", "Prometheus"}
"""Sensors a machine may lack (Prometheus: no exporter URLs configured); any other unsupported sensor fails."""
MAY_BE_EMPTY = {
    "Temperatures",
    "Fans",
    "Battery",
    "On mains power",
    "Battery time left",
    "CPU frequency",
    "Sessions per user",
    "CPU per Slurm job",
    "Memory per Slurm job",
    "IO per Slurm job",
    "Processes per Slurm job",
}
"""Node panels that may read nothing here: sensors a VM lacks, nobody logged in, no Slurm job running."""


@dataclass
class Live:
    pipeline: Pipeline
    output: Path
    unsupported: set[str]
    local_paths: set[str]
    settings: Settings
    """The dashboards' settings: what the shipped configuration sends."""
    gone_feeds: Feeds

    def dashboard(self, name: str) -> dict:
        return json.loads((self.output / f"{name}.json").read_text())

    def datapoints(self, target: str) -> dict[str, list[float]]:
        """Non-null values per series of a target over the last 5 minutes."""
        rendered = self.pipeline.graphite.render(target, from_="-5min")
        return {series["target"]: [v for v, _ in series["datapoints"] if v is not None] for series in rendered}

    def expected(self, metric: Metric) -> bool:
        """Whether this host must produce ``metric``."""
        if metric.sensor_name in self.unsupported:
            return False
        if not metric.sometimes:
            return True
        pattern = metric_pattern(HOST, metric.sensor_name, metric.keys)
        return any(glob_matches(alt, path) for alt in expand_braces(pattern) for path in self.local_paths)


def measure_here(config_path: Path) -> tuple[set[str], set[str]]:
    """(unsupported sensors, paths) of one measurement with the agent's configuration and code."""
    config = load_agent_config(str(config_path))
    unsupported, paths = set(), set()
    for sensor_config in config.sensors:
        sensor = REGISTRY[sensor_config.name](sensor_config.settings)
        try:
            sensor.start()
            value = sensor.measure()
        except SensorUnsupported:
            unsupported.add(sensor_config.name)
            continue
        sample = {"host": config.hostname, "sensor": sensor_config.name, "time": time.time(), "value": value}
        paths |= {path for path, _ in sample_to_datapoints(sample)}
    return unsupported, paths


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("dashboards-live")
    shipped = load_agent_config(str(SHIPPED_AGENT_CONFIG))
    with Pipeline(workdir, host_config=SHIPPED_AGENT_CONFIG) as pipeline:
        running = load_agent_config(str(pipeline.agent_config(HOST)))
        assert [(s.name, s.settings) for s in running.sensors] == [(s.name, s.settings) for s in shipped.sensors]
        unsupported, local_paths = measure_here(pipeline.agent_config(HOST))
        assert unsupported <= MAY_BE_UNSUPPORTED, f"sensors failing here: {unsupported - MAY_BE_UNSUPPORTED}"
        pipeline.wait_for_sensors(GONE, set(GONE_SENSORS) - unsupported, points=2)
        pipeline.agents[GONE].stop()
        gone_at = time.monotonic()
        pipeline.wait_for_sensors(HOST, {s.name for s in shipped.sensors} - unsupported, points=4)
        time.sleep(max(0.0, gone_at + 13 - time.monotonic()))  # MISSING_AFTER + a margin
        hosts = workdir / "hosts.ini"
        hosts.write_text(f"[hosts]\n{HOST}.cluster.example.org ansible_user=root\n{GONE}\n")
        output = workdir / "dashboards"
        command = [str(hosts), "-o", str(output), "--cluster", "test", "--agent-config", str(SHIPPED_AGENT_CONFIG)]
        assert main(command) == 0
        settings = Settings(feeds=Feeds.from_agent_config(shipped))
        gone_feeds = Feeds.from_agent_config(load_agent_config(str(pipeline.agent_config(GONE))))
        yield Live(pipeline, output, unsupported, local_paths, settings, gone_feeds)


def test_every_node_panel_target_returns_data(live: Live) -> None:
    board = live.dashboard(HOST)
    model = node_dashboard(HOST, live.settings)
    metrics = {target.target: target.metrics for _, target in model_targets(model)}
    written = [target["target"] for panel in json_panels(board) for target in panel.get("targets", [])]
    assert written == [target.target for _, target in model_targets(model)]
    checked, skipped, empty = 0, [], []
    for panel in json_panels(board):
        for target in panel.get("targets", []):
            expr = target["target"]
            assert not VARIABLE.search(expr), f"{panel['title']}: a variable in a node dashboard: {expr}"
            if not any(live.expected(metric) for metric in metrics[expr]):
                skipped.append(panel["title"])
                continue
            checked += 1
            if not any(live.datapoints(expr).values()):
                empty.append(f"{panel['title']}: {expr}")
    assert empty == []
    assert checked >= 30, f"only {checked} targets checked; skipped: {skipped}"
    assert set(skipped) <= MAY_BE_EMPTY


def test_every_metric_returns_data_for_one_of_the_hosts(live: Live) -> None:
    """Each metric alone, so one right half of a ``group()`` cannot hide a wrong
    other half (DiskUsage's several-paths shape comes from gone01). Only
    metrics one of the two configurations sends: the others (GPU on a host
    without one) are on no dashboard drawn for them."""
    scope = Scope(Glob(f"{{{HOST},{GONE}}}"))
    declared = {name: value for name, value in vars(m).items() if isinstance(value, Metric)}
    sent = {
        name for name, metric in declared.items() if live.settings.feeds.sends(metric) or live.gone_feeds.sends(metric)
    }
    assert {"DISK_PERCENT", "DISK_PERCENT_EACH", "CPU_EACH", "DISK_BYTES", "NET_BYTES", "TOP_IDS"} <= sent
    empty = [
        f"{name}: {scope.series(metric).expr}"
        for name, metric in sorted(declared.items())
        if name in sent and live.expected(metric) and not any(live.datapoints(scope.series(metric).expr).values())
    ]
    assert empty == []


def host_values(live: Live, variable: dict) -> list[str]:
    """``$host``'s values as Grafana gets them: the variable's find query, then its regex."""
    regex = re.compile(variable["regex"].strip("/"))
    return sorted(name for name in live.pipeline.find(variable["query"]) if regex.search(name))


def substitute(target: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        target = target.replace(f"${name}", value)
    return target


def test_every_cluster_panel_target_returns_data(live: Live) -> None:
    board = live.dashboard("cluster")
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    hosts = host_values(live, variables["host"])
    assert hosts == sorted([HOST, GONE])
    values = {"host": "{" + ",".join(hosts) + "}", "missing_after": MISSING_AFTER}
    empty = []
    for panel in json_panels(board):
        for target in panel.get("targets", []):
            expr = substitute(target["target"], values)
            assert not VARIABLE.search(expr), expr
            if not any(live.datapoints(expr).values()):
                empty.append(f"{panel['title']}: {expr}")
    assert empty == []


def test_missing_nodes_panel_names_the_stopped_agent(live: Live) -> None:
    board = live.dashboard("cluster")
    targets = {panel["title"]: panel["targets"] for panel in json_panels(board) if panel["type"] != "row"}
    values = {"host": f"{{{HOST},{GONE}}}", "missing_after": MISSING_AFTER}
    [missing] = targets["Missing nodes"]
    rendered = live.datapoints(substitute(missing["target"], values))
    assert list(rendered) == [GONE] and rendered[GONE][-1] == 0
    reporting, selected = (live.datapoints(substitute(t["target"], values)) for t in targets["Nodes reporting"])
    assert reporting["reporting"][-1] == 1 and selected["selected"][-1] == 2
    # With only the running host selected, nothing is missing: the panel shows its "no value" text.
    only_here = substitute(missing["target"], {"host": HOST, "missing_after": MISSING_AFTER})
    assert live.datapoints(only_here) == {}


def test_cluster_model_matches_the_written_json(live: Live) -> None:
    """The targets checked above are the ones of the grafanalib model (and so
    carry the metrics the skip rule needs)."""
    written = [t["target"] for panel in json_panels(live.dashboard("cluster")) for t in panel.get("targets", [])]
    model = cluster_dashboard("test", [HOST, GONE], live.settings)
    assert written == [target.target for _, target in model_targets(model)]
    assert all(Scope(HOST_VARIABLE).series(metric).expr in " ".join(written) for metric in m.HEARTBEAT)
