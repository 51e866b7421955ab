"""Relay trees: lagent → site lmaster → central lmaster → real carbon-cache.

The site lmaster relays as an agent would (``[upstream]``); the central one
must allow it (``accept relays = yes``). The delivery guarantee holds across
the tree: while the central lmaster is down nothing is acknowledged, the data
waits, and it lands once the central one is up.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fructosa.graphite_paths import short_hostname
from tests.support.carbon import CarbonCache, free_ports
from tests.support.daemons import Daemon, rewrite_ini, seed_configs
from tests.support.waiting import wait_for_log

HOST = short_hostname(__import__("socket").gethostname())


def tree_configs(tmp_path: Path, carbon: CarbonCache, accept_relays: bool) -> tuple[Path, Path, Path, int, int]:
    central_port, site_port = free_ports(2)
    central_dir, site_dir = tmp_path / "central", tmp_path / "site"
    central_dir.mkdir()
    site_dir.mkdir()
    central, _ = seed_configs(central_dir, central_port, carbon.pickle_port)
    central.write_text(
        rewrite_ini(central.read_text(), {("lmaster", "accept relays"): "yes" if accept_relays else "no"})
    )
    site, agent = seed_configs(site_dir, site_port, carbon.pickle_port)
    site.write_text(
        rewrite_ini(
            site.read_text(),
            {
                ("Graphite", "enabled"): "no",
                ("upstream", "host"): "127.0.0.1",
                ("upstream", "incoming data port"): str(central_port),
            },
        )
    )
    agent.write_text(rewrite_ini(agent.read_text(), {("sensor:VirtualMemory", "time_interval"): "1"}))
    return central, site, agent, central_port, site_port


@pytest.mark.slow
def test_two_level_tree_delivers_including_what_came_while_the_top_was_down(
    tmp_path: Path, carbon: CarbonCache
) -> None:
    central, site, agent, central_port, site_port = tree_configs(tmp_path, carbon, accept_relays=True)
    path = f"{HOST}.VirtualMemory.percent"
    with Daemon("lmaster", site, site.parent).start(listen_port=site_port):
        with Daemon("lagent", agent, site.parent).start():
            time.sleep(4)  # the condition under test: the agent measures while the central lmaster does not exist
            with Daemon("lmaster", central, central.parent).start(listen_port=central_port):
                central_up = time.time()
                points = carbon.wait_for(path, lambda points: len(points) >= 6, timeout=30)
                before = [when for when, _ in points if when < central_up - 1]
                assert before, f"nothing measured before the central lmaster started reached carbon: {points}"
                # seconds of the outage, not only its end: the agent measured for 4 s before the central started
                assert min(when for when, _ in points) <= central_up - 3, (points, central_up)
                # the site lmaster's own view of its agent travels up the tree too
                carbon.wait_for(f"{HOST}.fructosa.up", lambda points: points[-1][1] == 1.0, timeout=30)
    log = (site.parent / "limon.log").read_text()
    assert "relaying to upstream lmaster 127.0.0.1" in log


def test_central_lmaster_refuses_relays_unless_allowed(tmp_path: Path, carbon: CarbonCache) -> None:
    central, site, agent, central_port, site_port = tree_configs(tmp_path, carbon, accept_relays=False)
    with Daemon("lmaster", central, central.parent).start(listen_port=central_port):
        with Daemon("lmaster", site, site.parent).start(listen_port=site_port):
            central_log, site_log = central.parent / "limon.log", site.parent / "limon.log"
            central_says = "relays are not accepted here (set [lmaster] accept relays = yes)"
            site_says = "upstream lmaster refused: relays not accepted here"
            wait_for_log(central_log, central_says, timeout=15)
            wait_for_log(site_log, site_says, timeout=15)
