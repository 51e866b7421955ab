"""Node dashboards rendered once per shape and written per host by substituting
the name (fructosa.dashboards.rendering): byte for byte the text of a full
rendering, for any host name, option and shape, and from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fructosa.config import load_agent_config
from fructosa.dashboards import Settings, cluster_dashboard, node_dashboard
from fructosa.dashboards.cli import main
from fructosa.dashboards.feeds import Feeds
from fructosa.dashboards.rendering import PLACEHOLDERS, NodeDashboards, dashboard_text
from fructosa.graphite_paths import short_hostname

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parent.parent

NAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
host_names = st.one_of(
    st.text(NAME_CHARACTERS, min_size=1, max_size=40),  # long ones get a hashed uid: rendered in full
    st.builds(
        lambda name, domain: f"{name}.{domain}",
        st.text(NAME_CHARACTERS, min_size=1, max_size=12),
        st.sampled_from(["cluster.example.org", "x"]),
    ),
    st.sampled_from(["n" * 27, "node01", "fructosa", "node", "cluster", "QzxHOSTqzx", "XqjNAMEjqX", "a", "0", "-"]),
    st.text(min_size=1, max_size=8),  # anything at all: sanitized on the way in
)
SETTINGS = [
    Settings(),
    Settings.from_options("fructosa", "6h", "30s"),
    Settings.from_options("site.graphite", "1d", "off"),
    Settings(feeds=Feeds.from_agent_config(load_agent_config(str(REPO / "conf" / "lagent.conf")))),
]


def full_text(host: str, options: Settings, gpus: bool) -> str:
    return dashboard_text(node_dashboard(host, options, gpus=gpus))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host=host_names, which=st.integers(0, len(SETTINGS) - 1), gpus=st.booleans())
def test_substituted_text_is_the_full_rendering(host: str, which: int, gpus: bool) -> None:
    options = SETTINGS[which]
    try:
        short_hostname(host)
    except ValueError:  # no dashboard for a name that cannot be a path component, either way
        return
    assert NodeDashboards(options).text(host, gpus) == full_text(host, options, gpus)


def test_one_renderer_serves_many_hosts_and_both_shapes() -> None:
    options = Settings.from_options("fructosa", "6h", "30s")
    nodes = NodeDashboards(options)
    hosts = ["node01", "node02.cluster.example.org", "gpu-7", "a" * 30, "n_1"]
    for gpus in (False, True, False):
        for host in hosts:
            assert nodes.text(host, gpus) == full_text(host, options, gpus), (host, gpus)


def test_placeholders_appear_in_no_dashboard_by_themselves() -> None:
    text = full_text("node01", Settings(), True) + dashboard_text(cluster_dashboard("c", ["node01"], Settings()))
    assert not any(placeholder in text for placeholder in PLACEHOLDERS)


def test_command_output_is_the_full_rendering(tmp_path: Path) -> None:
    """A small inventory with GPU hosts, a fully qualified name and a name too long
    for a plain uid: every file is what grafanalib writes for the full model."""
    hosts = ["node01", "node02.cluster.example.org", "gpu01", "n" * 35]
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[compute]\n" + "\n".join(hosts) + "\n\n[gpu]\ngpu01\n")
    output = tmp_path / "out"
    assert main([str(inventory), "-s", "compute", "--gpu-section", "gpu", "--prefix", "site", "-o", str(output)]) == 0
    options = Settings.from_options("site", "3h", "1m")
    expected = {f"{short_hostname(host)}.json": full_text(short_hostname(host), options, host == "gpu01")
                for host in hosts}  # fmt: skip
    names = [short_hostname(host) for host in hosts]
    expected["cluster.json"] = dashboard_text(cluster_dashboard("compute", names, options, ["gpu01"]))
    assert sorted(path.name for path in output.iterdir()) == sorted(expected)
    for name, text in expected.items():
        assert (output / name).read_text(encoding="utf-8") == text, name
