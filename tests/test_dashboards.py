"""make-fructosa-dashboard: golden JSON, the grafanalib model, paths against the
sensors' golden output, and the hosts file (Ansible INI inventory).

The real-data check (every panel target against a live Graphite) is
tests/test_dashboards_live.py.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import attr
import pytest
from grafanalib._gen import DashboardEncoder, generate_dashboard, loader
from grafanalib.core import Dashboard

from fructosa.config import load_agent_config
from fructosa.dashboards import Settings, cluster_dashboard, node_dashboard
from fructosa.dashboards import metrics as m
from fructosa.dashboards.cli import main
from fructosa.dashboards.feeds import Feeds
from fructosa.dashboards.inventory import InventoryError, read_hosts
from fructosa.dashboards.panels import DATASOURCE, PANEL_TYPES
from fructosa.dashboards.queries import HOST_VARIABLE, Scope
from fructosa.graphite_paths import ANY, Glob, any_of, metric_pattern, sample_to_datapoints
from fructosa.sensors import REGISTRY
from tests.dashboards.helpers import (
    EXAMPLES_DIR,
    GOLDEN_ARGS,
    GOLDEN_DIR,
    HOSTS_FILE,
    expand_braces,
    glob_matches,
    golden_sensor_paths,
    json_panels,
    model_targets,
)

REGENERATE = "review, then run: .venv/bin/python tests/dashboards/regenerate.py"
DECLARED = {name: value for name, value in vars(m).items() if isinstance(value, m.Metric)}


def dashboards() -> list[Dashboard]:
    """One dashboard of each kind, as the golden files are made."""
    settings = Settings.from_options("fructosa", "6h", "30s")
    return [
        node_dashboard("node01", settings, gpus=True),
        cluster_dashboard("example", ["node01", "node02"], settings, gpu_hosts=["node01"]),
    ]


def used_metrics() -> set[m.Metric]:
    return {metric for board in dashboards() for _, target in model_targets(board) for metric in target.metrics}


# -- golden files and the grafanalib model ---------------------------------------


def test_command_writes_the_golden_dashboards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(HOSTS_FILE), *GOLDEN_ARGS, "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"2 node dashboards and cluster.json written to {tmp_path}\n"
    written = sorted(path.name for path in tmp_path.iterdir())
    assert (
        written
        == sorted(path.name for path in GOLDEN_DIR.glob("*.json"))
        == [
            "cluster.json",
            "node01.json",
            "node02.json",
        ]
    )
    for name in written:
        expected, actual = (GOLDEN_DIR / name).read_text(), (tmp_path / name).read_text()
        if actual != expected:
            diff = difflib.unified_diff(expected.splitlines(), actual.splitlines(), f"golden/{name}", name, n=2)
            pytest.fail("\n".join(list(diff)[:80]) + f"\n\nIf intended, {REGENERATE}", pytrace=False)


@pytest.mark.parametrize("source", sorted(EXAMPLES_DIR.glob("*.dashboard.py")), ids=lambda path: path.name)
def test_examples_are_what_generate_dashboard_writes(source: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.json"
    assert generate_dashboard([str(source), "-o", str(output)]) == 0
    example = source.with_name(source.name.removesuffix(".dashboard.py") + ".json")
    assert output.read_text() == example.read_text(), f"{example.name} is stale; {REGENERATE}"


def test_command_with_defaults_writes_the_examples(tmp_path: Path) -> None:
    assert main([str(EXAMPLES_DIR / "hosts.ini"), "-s", "hpc", "-o", str(tmp_path)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "cluster.json",
        "login01.json",
        *(f"node0{n}.json" for n in range(1, 5)),
    ]
    for name in ("cluster.json", "node01.json"):
        assert (tmp_path / name).read_text() == (EXAMPLES_DIR / name).read_text(), name


def attrs_objects(value: object):
    """Every grafanalib (attrs) object inside ``value``."""
    if attr.has(type(value)):
        yield value
        for field in attr.fields(type(value)):
            yield from attrs_objects(getattr(value, field.name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from attrs_objects(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from attrs_objects(item)


@pytest.mark.parametrize("board", dashboards(), ids=lambda board: board.title)
def test_dashboards_round_trip_through_grafanalib(board: Dashboard) -> None:
    objects = list(attrs_objects(board))
    assert len(objects) > 50
    for obj in objects:
        attr.validate(obj)  # the model's own validators, on every object
    text = json.dumps(board.to_json_data(), cls=DashboardEncoder, sort_keys=True)
    name = "cluster.json" if "cluster" in board.title else "node01.json"
    assert json.loads(text) == json.loads((GOLDEN_DIR / name).read_text())


@pytest.mark.parametrize("path", sorted(GOLDEN_DIR.glob("*.json")) + sorted(EXAMPLES_DIR.glob("*.json")), ids=str)
def test_only_current_panel_types_and_the_datasource_variable(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["schemaVersion"] >= 36 and board["rows"] == []
    [datasource] = [var for var in board["templating"]["list"] if var["type"] == "datasource"]
    assert (datasource["name"], datasource["query"]) == ("datasource", "graphite")
    panels = list(json_panels(board))
    assert {panel["type"] for panel in panels} <= PANEL_TYPES
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"] == DATASOURCE for target in panel["targets"]), panel["title"]
        if panel["type"] == "bargauge":
            unit = panel["options"]["fieldOptions"]["defaults"]["unit"]
        elif panel["type"] == "heatmap":
            unit = panel["options"]["cellValues"]["unit"]
        else:
            unit = panel["fieldConfig"]["defaults"]["unit"]
        assert unit, f"{panel['title']}: no unit"
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_rows_and_counters_are_as_documented() -> None:
    node, cluster = dashboards()
    rows = [panel.title for panel in node.panels if panel.to_json_data()["type"] == "row"]
    assert rows == ["Global", "CPU", "Memory", "Processes", "GPUs", "Disk", "Network", "Sensors", "Users"]
    targets = [target.target for _, target in model_targets(node)]
    for metric in (m.KERNEL_COUNTERS, m.DISK_BYTES, m.DISK_OPS, m.NET_BYTES, m.NET_PACKETS, m.SWAP_TRAFFIC):
        pattern = Scope("node01", "fructosa").series(metric).expr
        assert [t for t in targets if pattern in t and f"perSecond(interpolate({pattern}))" not in t] == []
    units = {panel.title: panel.to_json_data()["fieldConfig"]["defaults"].get("unit") for panel in node._iter_panels()}
    assert units["Disk throughput"] == "Bps" and units["Disk operations"] == "iops"
    assert units["Network traffic"] == "Bps" and units["CPU frequency"] == "rotmhz"
    assert node.time.start == "now-6h" and node.refresh == "30s"
    assert [var.name for var in cluster.templating.list] == ["datasource", "host", "missing_after"]


# -- paths: only from the metrics catalogue, and matching what sensors send -------

NODE = r"(?:[\w$*\[\]-]|\{[^{}]*\})+"
PATH_TOKEN = re.compile(rf"{NODE}(?:\.{NODE})+")
"""A dotted Graphite path or pattern in a target (commas only inside braces)."""


@pytest.mark.parametrize("board", dashboards(), ids=lambda board: board.title)
def test_every_path_in_a_target_comes_from_the_metrics_catalogue(board: Dashboard) -> None:
    scope = Scope(HOST_VARIABLE if "cluster" in board.title else "node01", "fructosa")
    for title, target in model_targets(board):
        assert target.metrics, f"{title}: a target without metrics"
        unquoted = re.sub(r"'[^']*'", "''", target.target)
        patterns = {scope.series(metric).expr for metric in target.metrics}
        paths = {token for token in PATH_TOKEN.findall(unquoted) if not token.replace(".", "").isdigit()}
        assert paths == patterns, f"{title}: {target.target}"


def test_every_declared_metric_is_on_a_dashboard() -> None:
    assert {name for name, metric in DECLARED.items() if metric not in used_metrics()} == set()


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_metric_keys_match_what_the_sensor_sends(name: str) -> None:
    """Each alternative of each key must be a path some golden case of the
    sensor produces: a field renamed in a sensor fails here, not in Grafana."""
    metric = DECLARED[name]
    sent = golden_sensor_paths()[metric.sensor_name]
    pattern = metric_pattern("node01", metric.sensor_name, metric.keys)
    unmatched = [alt for alt in expand_braces(pattern) if not any(glob_matches(alt, path) for path in sent)]
    assert unmatched == [], f"{name}: no golden {metric.sensor_name} case sends {unmatched}"


def test_metric_pattern_uses_the_flattening_rules() -> None:
    sample = {"host": "node01.cluster", "sensor": "DiskUsage", "time": 1.0, "value": {"scratch/local x": {"free": 1}}}
    [(path, _)] = sample_to_datapoints(sample, prefix="fructosa.hpc")
    assert metric_pattern("node01.cluster", "DiskUsage", ["scratch/local x", "free"], "fructosa.hpc") == path
    assert metric_pattern(Glob("$host"), "NetIOCounters", [ANY, any_of("bytes recv", "x")]) == (
        "$host.NetIOCounters.*.{bytes_recv,x}"
    )
    assert any_of("only") == "only"
    with pytest.raises(ValueError):
        metric_pattern("node01", "BootTime", prefix="bad prefix")


@pytest.mark.parametrize("prefix", ["", "fructosa", "a.b.c"])
def test_alias_nodes_follow_the_prefix(prefix: str) -> None:
    scope = Scope("node01", prefix)
    parts = scope.series(m.NET_BYTES_EACH).expr.split(".")
    assert parts[scope.host_node] == "node01"
    assert parts[scope.key_node(0)] == "*" and parts[scope.key_node(1)].startswith("{bytes_recv")


# -- the hosts file ----------------------------------------------------------------


def hosts_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hosts.ini"
    path.write_text(text)
    return str(path)


def test_hosts_file_in_ansible_style(tmp_path: Path) -> None:
    path = hosts_file(
        tmp_path,
        "ungrouped01\n"
        "# comment\n; comment\n"
        "[hosts]  # trailing comment\n"
        "node[08:10].cluster.local ansible_user=root ansible_port=22   # inline comment\n"
        "rack[a:b]-n[1:5:2] 'ansible_ssh_extra_args=-o X=1'\n"
        "login01:2222\n"
        "node09.cluster.local\n"
        "[hosts:vars]\nanything goes here = 1\n"
        "[gpu]\ngpu01\n"
        "[cluster:children]\nhosts\ngpu  # comment\nmissing_group\n",
    )
    nodes = ["node08", "node09", "node10", "racka-n1", "racka-n3", "racka-n5", "rackb-n1", "rackb-n3", "rackb-n5"]
    assert read_hosts(path) == [*nodes, "login01"]
    assert read_hosts(path, "cluster") == [*nodes, "login01", "gpu01"]
    assert read_hosts(path, "all")[0] == "ungrouped01"
    assert read_hosts(path, "ungrouped") == ["ungrouped01"]


@pytest.mark.parametrize(
    ("text", "section", "message"),
    [
        ("[hosts]\nnode01\n[gpu]\ngpu01\n", "computes", "{path}: no section [computes] (sections: hosts, gpu)"),
        ("", "hosts", "{path}: no section [hosts] (sections: none)"),
        ("[hosts]\n# nobody\n[gpu]\ngpu01\n", "hosts", "{path}: section [hosts] has no hosts"),
        ("[hosts\nnode01\n", "hosts", "{path}: line 1: malformed section header '[hosts'"),
        ("[hosts:kids]\nnode01\n", "hosts", "{path}: line 1: [hosts:kids]: unknown section type 'kids'"),
        ("[hosts]\nnode01 root\n", "hosts", "{path}: [hosts] line 2: host variable 'root' is not key=value"),
        ("[hosts]\nnode01 a='b\n", "hosts", "{path}: [hosts] line 2: No closing quotation"),
        ("[hosts]\nnode[5:1]\n", "hosts", "{path}: [hosts] line 2: node[5:1]: range [5:1] runs backwards"),
        ("[hosts]\nnode[01:100]\n", "hosts", "must be equally long"),
        ("[hosts]\nnode[0:99999999]\n", "hosts", "more than 100000 hosts"),
        ("[hosts]\nn[a:3]\n", "hosts", "neither numbers nor single letters"),
        ("[hosts]\n10.0.0.5\n", "hosts", "10.0.0.5 is an IP address; the agent sends its host name"),
        (
            "[hosts]\nnode01.a\nnode01.b\n",
            "hosts",
            "{path}: [hosts] line 2 node01.a and [hosts] line 3 node01.b are both 'node01' in Graphite paths",
        ),
    ],
)
def test_hosts_file_errors_are_one_line(tmp_path: Path, text: str, section: str, message: str) -> None:
    path = hosts_file(tmp_path, text)
    with pytest.raises(InventoryError) as error:
        read_hosts(path, section)
    assert message.format(path=path) in str(error.value) and "\n" not in str(error.value)


def test_unreadable_hosts_files(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"nothing\.ini: cannot read: No such file or directory$"):
        read_hosts(str(tmp_path / "nothing.ini"))
    with pytest.raises(InventoryError, match=r": cannot read: Is a directory$"):
        read_hosts(str(tmp_path))
    binary = tmp_path / "binary.ini"
    binary.write_bytes(b"[hosts]\n\xff\xfe\n")
    with pytest.raises(InventoryError, match=r"binary\.ini: not a text file \(UTF-8\)$"):
        read_hosts(str(binary))


# -- the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{dir}/none.ini"], "{dir}/none.ini: cannot read: No such file or directory"),
        (["{hosts}", "-s", "login"], "{hosts}: no section [login] (sections: compute, storage, gpu)"),
        (
            ["{hosts}", "-s", "compute", "--gpu-section", "gpus"],
            "{hosts}: no section [gpus] (sections: compute, storage, gpu)",
        ),
        (["{hosts}", "--time-from", "yesterday"], "time range 'yesterday': a duration such as 3h, 30m or 7d"),
        (["{hosts}", "--refresh", "often"], "refresh 'often': a duration such as 30s or 1m, or off"),
        (["{hosts}", "--prefix", "a b"], "prefix 'a b': dot-separated words of letters, digits, _ and -"),
        (["{hosts}", "--agent-config", "{dir}/none.conf"], "{dir}/none.conf: configuration file not found"),
        (["{hosts}", "--agent-config", "{dir}"], "{dir}: is a directory, not a configuration file"),
        (
            ["{hosts}", "--agent-config", "{empty}"],
            "{empty}: no [sensor:NAME] section: the agent sends nothing to draw",
        ),
    ],
)
def test_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    values = {"dir": tmp_path, "hosts": HOSTS_FILE, "empty": tmp_path / "empty.conf"}
    values["empty"].write_text("[lagent]\nhostname = node01\n")
    status = main([arg.format(**values) for arg in args] + ["-o", str(tmp_path / "out")])
    assert status == 2
    assert capsys.readouterr().err == f"make-fructosa-dashboard: error: {message.format(**values)}\n"
    assert not (tmp_path / "out").exists()


def test_command_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = hosts_file(tmp_path, "[hosts]\nn1.example.org\nn2\n")
    out = tmp_path / "new" / "dir"
    assert main([hosts, "-o", str(out), "--time-from", "now-7d", "--refresh", "off"]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["cluster.json", "n1.json", "n2.json"]
    node = json.loads((out / "n1.json").read_text())
    assert (node["time"]["from"], node["refresh"], node["uid"]) == ("now-7d", "", "fructosa-node-n1")
    cluster = json.loads((out / "cluster.json").read_text())
    assert cluster["title"] == "FrUCToSA cluster hosts"
    [host] = [var for var in cluster["templating"]["list"] if var["name"] == "host"]
    assert (host["query"], host["regex"], host["multi"], host["includeAll"]) == ("*", "/^(n1|n2)$/", True, True)


def test_command_refuses_a_host_named_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([hosts_file(tmp_path, "[hosts]\ncluster.example.org\n"), "-o", str(tmp_path)]) == 2
    assert "a host named 'cluster' would overwrite cluster.json" in capsys.readouterr().err


def test_command_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([str(HOSTS_FILE), "-s", "compute", "-o", str(blocker)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("make-fructosa-dashboard: error: ") and "cannot write" in line


def test_examples_load_as_grafanalib_dashboards() -> None:
    for source in EXAMPLES_DIR.glob("*.dashboard.py"):
        assert isinstance(loader(str(source)), Dashboard)


# -- --agent-config: only the panels the agent configuration feeds -------------------

EVERY_OPTION = {
    "CPUPercent": {"percpu": "yes", "total": "yes"},
    "CPUFreq": {"percpu": "yes"},
    "DiskIOCounters": {"perdisk": "yes"},
    "NetIOCounters": {"pernic": "yes"},
    "Users": {"per_user": "yes"},
}
"""Every option a dashboard metric needs (DiskUsage's two shapes exclude each other)."""
SHIPPED_AGENT_CONFIG = Path(__file__).resolve().parent.parent / "conf" / "lagent.conf"


def agent_feeds(tmp_path: Path, sensors: dict[str, dict[str, str]]) -> Feeds:
    """What an lagent.conf with these ``[sensor:NAME]`` sections sends, read as the command reads it."""
    path = tmp_path / "lagent.conf"
    path.write_text("".join(f"[sensor:{name}]\n" + "".join(f"{k} = {v}\n" for k, v in options.items())
                            for name, options in sensors.items()))  # fmt: skip
    return Feeds.from_agent_config(load_agent_config(str(path)))


def every_sensor(**changes: dict[str, str] | None) -> dict[str, dict[str, str]]:
    """All sensors with every option on; ``NAME=None`` leaves one out, ``NAME={...}`` sets its options."""
    sensors = {name: EVERY_OPTION.get(name, {}) for name in REGISTRY}
    for name, options in changes.items():
        if options is None:
            del sensors[name]
        else:
            sensors[name] = options
    return sensors


def drawn(feeds: Feeds, gpus: bool = True) -> list[Dashboard]:
    settings = Settings("fructosa", feeds=feeds)
    return [
        node_dashboard("node01", settings, gpus=gpus),
        cluster_dashboard("example", ["node01", "node02"], settings, gpu_hosts=["node01"] if gpus else []),
    ]


def layout_of(board: Dashboard) -> list[tuple[str, int]]:
    """(title, number of targets) of every panel and row, in order."""
    return [(panel.title, len(getattr(panel, "targets", None) or [])) for panel in board._iter_panels()]


def test_without_perdisk_no_panel_reads_a_disk_of_its_own(tmp_path: Path) -> None:
    feeds = agent_feeds(tmp_path, every_sensor(DiskIOCounters={"perdisk": "no"}))
    node, cluster = drawn(feeds)
    per_disk = re.compile(r"\.DiskIOCounters\.\*\.")
    for board in (node, cluster):
        for title, target in model_targets(board):
            assert not per_disk.search(target.target), f"{title}: {target.target}"
            assert m.PERDISK not in {metric.needs for metric in target.metrics}, title
    panels = dict(layout_of(node))
    assert "Disk busy" not in panels
    assert panels["Disk throughput"] == panels["Disk operations"] == 1  # all disks only
    [throughput] = [panel for panel in node._iter_panels() if panel.title == "Disk throughput"]
    assert [target.refId for target in throughput.targets] == ["A"]
    assert "DiskIOCounters.{read_bytes,write_bytes}" in throughput.targets[0].target
    assert panels["Network traffic"] == 2  # pernic is on: all NICs, and each


def test_without_a_sensor_nothing_reads_it(tmp_path: Path) -> None:
    """Each sensor left out in turn: no target names it, not even inside the
    cluster's heartbeat group, and every panel that does not read it stays."""
    full = drawn(agent_feeds(tmp_path, every_sensor()))
    for name in sorted(REGISTRY):
        for board, every in zip(drawn(agent_feeds(tmp_path, every_sensor(**{name: None}))), full, strict=True):
            for title, target in model_targets(board):
                assert f".{name}." not in f"{target.target}.", f"without {name}: {title}: {target.target}"
                assert name not in {metric.sensor_name for metric in target.metrics}, title
            kept = layout_of(board)
            for panel in every._iter_panels():
                reads = {metric.sensor_name for target in getattr(panel, "targets", []) for metric in target.metrics}
                if reads and name not in reads:
                    assert (panel.title, len(panel.targets)) in kept, f"without {name}: {panel.title} missing"
    without_disk_io = [
        title for title, _ in layout_of(drawn(agent_feeds(tmp_path, every_sensor(DiskIOCounters=None)))[0])
    ]
    assert "Disk throughput" not in without_disk_io and "Disk busy" not in without_disk_io
    assert "Space used" in without_disk_io


def test_every_drawn_target_reads_only_what_the_agent_sends(tmp_path: Path) -> None:
    configurations = {
        "shipped": Feeds.from_agent_config(load_agent_config(str(SHIPPED_AGENT_CONFIG))),
        "no options": agent_feeds(tmp_path, {name: {} for name in REGISTRY}),
        "options off": agent_feeds(
            tmp_path,
            every_sensor(
                CPUPercent={"percpu": "no", "total": "yes"},
                DiskUsage={"path": "/ /home"},
                NetIOCounters={"pernic": "no"},
                Users={"per_user": "no"},
                CPUFreq={"percpu": "no"},
            ),
        ),  # fmt: skip
    }
    for name, feeds in configurations.items():
        for board in drawn(feeds):
            for title, target in model_targets(board):
                unsent = [metric for metric in target.metrics if not feeds.sends(metric)]
                assert unsent == [], f"{name}: {title} reads {unsent}"
    node, _ = drawn(configurations["options off"])
    panels = dict(layout_of(node))
    assert {"Utilisation per CPU", "Sessions per user"}.isdisjoint(panels)
    assert panels["CPU frequency"] == 1 and panels["Network traffic"] == 1
    [space] = [target.target for title, target in model_targets(node) if title == "Space used"]
    assert "group(fructosa.node01.DiskUsage.*.percent)" in space  # the several-paths shape only


def test_with_every_sensor_and_option_every_panel_is_drawn(tmp_path: Path) -> None:
    for every, unfiltered in zip(drawn(agent_feeds(tmp_path, every_sensor())), dashboards(), strict=True):
        assert layout_of(every) == layout_of(unfiltered)
        assert [panel.gridPos for panel in every._iter_panels()] == [p.gridPos for p in unfiltered._iter_panels()]


def test_rows_and_gauges_go_with_their_sensors(tmp_path: Path) -> None:
    node, cluster = drawn(agent_feeds(tmp_path, {"CPUPercent": {}, "VirtualMemory": {}}))
    rows = [panel.title for panel in node.panels if panel.to_json_data()["type"] == "row"]
    assert rows == ["Global", "CPU", "Memory"]  # no GPUs row for a GPU host: the agent runs no GPU sensor
    assert [title for title, _ in layout_of(node)] == [
        "Global", "CPU", "Memory", "CPU", "CPU utilisation", "Utilisation per CPU", "Memory", "Memory",
        "Memory and swap used",
    ]  # fmt: skip
    assert [title for title, _ in layout_of(cluster)] == [
        "Nodes", "Missing nodes", "Nodes reporting", "Overview", "CPU utilisation", "Load (busy CPUs)", "Memory used",
    ]  # fmt: skip
    [missing] = [target.target for title, target in model_targets(cluster) if title == "Missing nodes"]
    assert "group(fructosa.$host.CPUPercent.{0,total},fructosa.$host.VirtualMemory.percent)" in missing
    y = [panel.gridPos.y for panel in node.panels]
    assert y == sorted(y) and node.panels[0].gridPos.y == 0  # laid out without gaps for what is left out


def test_command_with_the_shipped_agent_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(HOSTS_FILE), *GOLDEN_ARGS, "--agent-config", str(SHIPPED_AGENT_CONFIG), "-o", str(tmp_path)]
    assert main(args) == 0
    assert capsys.readouterr().err == ""
    feeds = Feeds.from_agent_config(load_agent_config(str(SHIPPED_AGENT_CONFIG)))
    model = node_dashboard("node01", Settings.from_options("fructosa", "6h", "30s", feeds), gpus=True)
    expected = json.loads(json.dumps(model.to_json_data(), cls=DashboardEncoder))
    assert json.loads((tmp_path / "node01.json").read_text()) == expected
    assert all(feeds.sends_any(target.metrics) for _, target in model_targets(model))


def test_command_warns_about_what_the_agent_ignores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "lagent.conf"
    config.write_text("[sensor:CPUPercent]\n[sensor:DiskIO]\n")
    assert main([str(HOSTS_FILE), "-s", "compute", "--agent-config", str(config), "-o", str(tmp_path / "out")]) == 0
    [warning] = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"make-fructosa-dashboard: warning: {config}: [sensor:DiskIO] invalid sensor name")
    node = json.loads((tmp_path / "out" / "node01.json").read_text())
    assert {panel["title"] for panel in json_panels(node)} == {
        "Global", "CPU", "CPU utilisation", "Utilisation per CPU",
    }  # fmt: skip
