"""The carbon ring: every path routed exactly where carbon 1.1.10's own router sends it.

The reference is the installed ``carbon`` package's ``ConsistentHashingRouter``
(what a carbon-relay with ``RELAY_METHOD = consistent-hashing`` runs), set up
from carbon's own default settings, so a difference in hashing, collision
handling, walk order or replica selection fails here.
"""

from __future__ import annotations

import string
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fructosa.config import ConfigError, GraphiteConfig, effective_master_ini, load_master_config
from fructosa.sinks.ring import (
    POINTS_PER_NODE,
    POSITIONS,
    CachedRouter,
    ConsistentHashRing,
    Destination,
    check_ring,
    parse_destinations,
    ring_position,
)

with warnings.catch_warnings():  # carbon 1.1.10's routers module still imports the deprecated imp
    warnings.simplefilter("ignore", DeprecationWarning)
    from carbon.conf import Settings
    from carbon.conf import defaults as carbon_defaults
    from carbon.routers import ConsistentHashingRouter


def carbon_router(
    destinations: list[Destination], replication_factor: int, diverse_replicas: bool
) -> ConsistentHashingRouter:
    config = Settings()
    config.update(carbon_defaults)
    config.update(REPLICATION_FACTOR=replication_factor, DIVERSE_REPLICAS=diverse_replicas)
    router = ConsistentHashingRouter(config)
    for destination in destinations:
        router.addDestination((destination.host, destination.port, destination.instance))
    return router


def carbon_route(router: ConsistentHashingRouter, key: object) -> tuple[Destination, ...]:
    return tuple(Destination(host, port, instance) for host, port, instance in router.getDestinations(key))


HOSTS = ("127.0.0.1", "10.0.0.2", "carbon-b.example.org", "::1")
destination_lists = st.lists(
    st.builds(
        Destination,
        host=st.sampled_from(HOSTS),
        port=st.integers(1, 65535),
        instance=st.none() | st.sampled_from(["a", "b", "c", "cache-1", "2"]),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda destination: destination.node,
)
component = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)
metric_paths = st.lists(component, min_size=1, max_size=6).map(".".join) | st.text(min_size=1, max_size=40)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    destinations=destination_lists,
    replication_factor=st.integers(1, 3),
    diverse_replicas=st.booleans(),
    paths=st.lists(metric_paths, min_size=1, max_size=40),
)
def test_routes_match_carbons_router_in_order(
    destinations: list[Destination], replication_factor: int, diverse_replicas: bool, paths: list[str]
) -> None:
    try:
        check_ring(destinations, replication_factor, diverse_replicas)
    except ValueError:
        assume(False)  # carbon would store fewer copies than asked; the config refuses it
    ring = ConsistentHashRing(destinations, replication_factor, diverse_replicas)
    router = carbon_router(destinations, replication_factor, diverse_replicas)
    cached = CachedRouter(ring, max_entries=8)
    for path in paths:
        expected = carbon_route(router, path)
        assert ring.route(path) == expected
        assert cached.route(path) == expected
        assert len(expected) == replication_factor


RINGS = [
    # two instances per host, as carbon's docs suggest, plus a lone one: points collide
    (parse_destinations("10.0.0.1:2004:a 10.0.0.1:2104:b 10.0.0.2:2004:a 10.0.0.2:2104:b 10.0.0.3:2004:a"), 2, True),
    (parse_destinations("10.0.0.1:2004:a 10.0.0.1:2104:b 10.0.0.2:2004:a 10.0.0.2:2104:b 10.0.0.3:2004:a"), 3, False),
    (parse_destinations("carbon1:2004, carbon2:2004, carbon3:2004, carbon4:2004, carbon5:2004, carbon6:2004"), 1, True),
    (parse_destinations("[::1]:2004:a"), 1, True),
]


@pytest.mark.parametrize("destinations, replication_factor, diverse_replicas", RINGS)
def test_every_ring_position_matches_carbon(
    destinations: tuple[Destination, ...], replication_factor: int, diverse_replicas: bool
) -> None:
    """All 65536 positions, so wrap-around, collisions and the walk are covered, not just sampled."""
    router = carbon_router(list(destinations), replication_factor, diverse_replicas)
    points = [position for position, _ in router.ring.ring]
    if len(destinations) > 2:  # the ring must have moved colliding points, or this proves less than it says
        raw = {ring_position(f"{(d.host, d.instance)!r}:{i}") for d in destinations for i in range(POINTS_PER_NODE)}
        assert len(raw) < len(points) == len(destinations) * POINTS_PER_NODE
    router.ring.compute_ring_position = lambda key: key  # ask carbon's walk about positions directly
    ring = ConsistentHashRing(destinations, replication_factor, diverse_replicas)
    for position in range(POSITIONS):
        assert ring.route_position(position) == carbon_route(router, position), position
    assert ring.routes() == {ring.route_position(position) for position in range(POSITIONS)}


def test_destination_order_matters_like_in_carbon() -> None:
    """Collisions are settled in insertion order, so the same set listed differently routes some positions apart."""
    forward, backward = RINGS[0][0], tuple(reversed(RINGS[0][0]))
    ring_f, ring_b = ConsistentHashRing(forward, 1), ConsistentHashRing(backward, 1)
    apart = [p for p in range(POSITIONS) if ring_f.route_position(p) != ring_b.route_position(p)]
    assert apart
    for destinations, ring in ((forward, ring_f), (backward, ring_b)):
        router = carbon_router(list(destinations), 1, True)
        router.ring.compute_ring_position = lambda key: key
        assert [ring.route_position(p) for p in apart] == [carbon_route(router, p) for p in apart]


def test_cached_router_is_bounded_and_consistent() -> None:
    ring = ConsistentHashRing(RINGS[0][0], 2)
    cached = CachedRouter(ring, max_entries=5)
    paths = [f"n{i}.Load.avg1" for i in range(23)]
    for _ in range(2):
        for path in paths:
            assert cached.route(path) is ring.route(path)  # shared tuples: callers can group by route
            assert 1 <= len(cached) <= 5
    with pytest.raises(ValueError, match="at least one path"):
        CachedRouter(ring, max_entries=0)


def test_parse_destinations() -> None:
    assert parse_destinations(" a:2004:x,b:2005 ,\n [fe80::1]:2006:y c.example:7") == (
        Destination("a", 2004, "x"),
        Destination("b", 2005),
        Destination("fe80::1", 2006, "y"),
        Destination("c.example", 7),
    )
    assert [str(d) for d in parse_destinations("a:2004:x [::1]:2004")] == ["a:2004:x", "[::1]:2004"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("carbon", "'carbon' has no port"),
        ("carbon:http", "'http' is not a TCP port"),
        ("carbon:0", "'0' is not a TCP port"),
        ("carbon:70000:a", "'70000' is not a TCP port"),
        (":2004", "'' is not a host name"),
        ("[::1:2004", "is not [address]:port[:instance]"),
        ("carbon:2004:", "instance '' must be"),
        ("carbon:2004:a:b", "instance 'a:b' must be"),
        (" , ", "no destination given"),
        ("carbon:2004:a carbon:2104:a", "carbon:2004:a and carbon:2104:a are the same carbon instance"),
        ("carbon:2004 carbon:2104", "carbon:2004 and carbon:2104 are the same carbon instance"),
    ],
)
def test_bad_destinations_say_why_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_destinations(text)
    assert message in str(error.value) and "\n" not in str(error.value)


# -- [Graphite] destinations / replication factor / diverse replicas ------------


def write(tmp_path: Path, graphite: str) -> str:
    path = tmp_path / "lmaster.conf"
    path.write_text(f"[Graphite]\n{graphite}")
    return str(path)


def test_legacy_single_destination_is_the_ring_of_one(tmp_path: Path) -> None:
    config = load_master_config(write(tmp_path, "host = carbon7\ncarbon receiver pickle port = 2204\n"))
    assert config.graphite.destinations == (Destination("carbon7", 2204),)
    assert (config.graphite.replication_factor, config.graphite.diverse_replicas) == (1, True)
    assert GraphiteConfig().destinations == (Destination("localhost", 2004),)
    assert config.warnings == ()


def test_destinations_and_replication_load_and_round_trip(tmp_path: Path) -> None:
    ring_keys = "destinations = c1:2004:a, c1:2104:b c2:2004:a\nreplication factor = 2\ndiverse replicas = no\n"
    config = load_master_config(write(tmp_path, ring_keys))
    graphite = config.graphite
    assert graphite.destinations == parse_destinations("c1:2004:a c1:2104:b c2:2004:a")
    assert (graphite.replication_factor, graphite.diverse_replicas) == (2, False)
    assert config.warnings == ()
    again = tmp_path / "again.conf"
    again.write_text(effective_master_ini(config))
    reloaded = load_master_config(str(again))
    assert reloaded.graphite == graphite and reloaded.warnings == ()


def test_pickle_port_beside_destinations_is_reported_ignored(tmp_path: Path) -> None:
    config = load_master_config(write(tmp_path, "destinations = c1:2004\ncarbon receiver pickle port = 2204\n"))
    assert config.graphite.destinations == (Destination("c1", 2004),)
    assert any("carbon receiver pickle port ignored" in warning for warning in config.warnings)


@pytest.mark.parametrize(
    "graphite, message",
    [
        ("destinations = c1\n", "[Graphite] destinations = 'c1': 'c1' has no port"),
        ("destinations = c1:2004 c1:2005\n", "[Graphite] destinations = 'c1:2004 c1:2005': c1:2004 and c1:2005"),
        ("destinations =\n", "[Graphite] destinations = '': no destination given"),
        ("replication factor = 0\n", "[Graphite] replication factor = '0': must be at least 1"),
        ("replication factor = two\n", "[Graphite] replication factor = 'two': not an integer"),
        ("replication factor = 2\n", "[Graphite] replication factor = '2': replication factor 2 exceeds the 1 dest"),
        (
            "destinations = c1:2004:a c1:2104:b\nreplication factor = 2\n",
            "[Graphite] replication factor = '2': replication factor 2 exceeds the 1 distinct host(s)",
        ),
        ("diverse replicas = maybe\n", "[Graphite] diverse replicas = 'maybe'"),
    ],
)
def test_ring_config_errors_name_section_key_and_value(tmp_path: Path, graphite: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_master_config(write(tmp_path, graphite))
    assert message in str(error.value) and "\n" not in str(error.value)
