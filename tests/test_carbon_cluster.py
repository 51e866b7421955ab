"""Several carbon-caches: lmaster shards exactly like carbon's consistent-hashing relay.

Two real carbon-caches, a real lmaster with ``[Graphite] destinations``; every
path must be stored by exactly the caches that carbon's own
``ConsistentHashingRouter`` (imported from the installed ``carbon``) names, so
graphite-web's ``CLUSTER_SERVERS`` finds it where carbon would have put it.
"""

from __future__ import annotations

import time
from pathlib import Path

from fructosa.sinks.ring import Destination
from tests.support.carbon import CarbonCache, free_ports
from tests.support.daemons import Daemon, rewrite_ini, seed_configs
from tests.support.peer import Peer
from tests.support.waiting import wait_for
from tests.test_ring import carbon_route, carbon_router

PATHS = [f"node7.Cluster.metric_{index}" for index in range(60)]


def carbons_choice(destinations: list[Destination], replication_factor: int, diverse: bool) -> dict[str, set]:
    router = carbon_router(destinations, replication_factor, diverse)
    return {path: {dest.instance for dest in carbon_route(router, path)} for path in PATHS}


def start_master(tmp_path: Path, caches: dict[str, CarbonCache], replication_factor: int, diverse: bool) -> Daemon:
    master_port, _ = free_ports(2)
    master_conf, _ = seed_configs(tmp_path, master_port, 2004)
    destinations = ", ".join(f"127.0.0.1:{cache.pickle_port}:{name}" for name, cache in caches.items())
    master_conf.write_text(
        rewrite_ini(
            master_conf.read_text(),
            {
                ("Graphite", "destinations"): destinations,
                ("Graphite", "replication factor"): str(replication_factor),
                ("Graphite", "diverse replicas"): "yes" if diverse else "no",
            },
        )
    )
    daemon = Daemon("lmaster", master_conf, tmp_path)
    daemon.start(listen_port=master_port)
    daemon.listen_port = master_port  # type: ignore[attr-defined]
    return daemon


def send_all(port: int) -> int:
    now = int(time.time())
    peer = Peer(port, host="node7")
    try:
        batch = peer.send_datapoints([(path, (now, float(index))) for index, path in enumerate(PATHS)])
        assert peer.read_acks() == [batch]
    finally:
        peer.close()
    return now


def wait_for_paths(caches: dict[str, CarbonCache], expected: dict[str, set], timeout: float = 20.0) -> None:
    def stored() -> dict[str, set]:
        return {path: {name for name, cache in caches.items() if path in cache.metric_paths()} for path in PATHS}

    def wrong() -> str:
        now = stored()
        return f"stored vs carbon's router: { {p: (now[p], expected[p]) for p in PATHS if now[p] != expected[p]} }"

    wait_for(lambda: stored() == expected, timeout, "every path on the caches carbon's router names", describe=wrong)


def test_each_path_lands_on_the_cache_carbons_router_names(tmp_path: Path) -> None:
    with CarbonCache(tmp_path / "a") as a, CarbonCache(tmp_path / "b") as b:
        caches = {"a": a, "b": b}
        expected = carbons_choice([Destination("127.0.0.1", c.pickle_port, n) for n, c in caches.items()], 1, True)
        assert {frozenset(names) for names in expected.values()} == {frozenset("a"), frozenset("b")}
        with start_master(tmp_path, caches, 1, True) as master:
            now = send_all(master.listen_port)
            wait_for_paths(caches, expected)
            for index, path in enumerate(PATHS):
                (owner,) = expected[path]
                assert caches[owner].series(path)[-1] == (now, float(index))


def test_replication_factor_two_stores_every_path_on_both(tmp_path: Path) -> None:
    with CarbonCache(tmp_path / "a") as a, CarbonCache(tmp_path / "b") as b:
        caches = {"a": a, "b": b}
        expected = carbons_choice([Destination("127.0.0.1", c.pickle_port, n) for n, c in caches.items()], 2, False)
        assert all(names == {"a", "b"} for names in expected.values())
        with start_master(tmp_path, caches, 2, False) as master:
            send_all(master.listen_port)
            wait_for_paths(caches, expected)


def test_a_dead_cache_holds_up_only_its_own_share(tmp_path: Path) -> None:
    a = CarbonCache(tmp_path / "a")
    b = CarbonCache(tmp_path / "b").reserve_ports()
    caches = {"a": a, "b": b}
    with a:
        expected = carbons_choice([Destination("127.0.0.1", c.pickle_port, n) for n, c in caches.items()], 1, True)
        with start_master(tmp_path, caches, 1, True) as master:
            send_all(master.listen_port)  # acknowledged: b's share is safe in lmaster's spool
            a_share = {path: names for path, names in expected.items() if names == {"a"}}
            wait_for(lambda: set(a_share) <= a.metric_paths(), 20, "a's share, not stalled behind the dead cache b")
            with b:
                wait_for_paths(caches, expected, timeout=30)
