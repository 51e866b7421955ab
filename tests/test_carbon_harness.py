"""The carbon test harness itself: a real carbon-cache round trip.

If these fail, every end-to-end test built on tests/support/carbon.py would
fail for reasons unrelated to FrUCToSA, so they pin down the harness first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.carbon import CarbonCache, GraphiteWeb, can_connect


@pytest.fixture
def carbon_cache(tmp_path: Path) -> Iterator[CarbonCache]:
    with CarbonCache(tmp_path) as carbon:
        yield carbon


def test_pickle_datapoints_are_read_back_from_whisper(carbon_cache: CarbonCache) -> None:
    now = int(time.time())
    expected = [(now - age, 0.5 + age) for age in (4, 3, 2, 1, 0)]
    carbon_cache.send_pickle(
        [("fructosa.node1.cpu.user", point) for point in expected] + [("fructosa.node2.load", (now, 42.0))]
    )

    series = carbon_cache.wait_for("fructosa.node1.cpu.user", lambda s: len(s) == len(expected))

    assert series == expected
    assert carbon_cache.wait_for("fructosa.node2.load") == [(now, 42.0)]
    assert carbon_cache.series("fructosa.node1.cpu.user", since=now - 1) == expected[-2:]
    assert carbon_cache.metric_paths() == {"fructosa.node1.cpu.user", "fructosa.node2.load"}
    assert carbon_cache.whisper_file("fructosa.node2.load") == (
        carbon_cache.data_dir / "fructosa" / "node2" / "load.wsp"
    )


def test_plaintext_lines_are_read_back_from_whisper(carbon_cache: CarbonCache) -> None:
    now = int(time.time())
    carbon_cache.send_plaintext([f"fructosa.node1.mem 1024.5 {now}"])

    assert carbon_cache.wait_for("fructosa.node1.mem") == [(now, 1024.5)]


def test_wait_for_timeout_names_the_metrics_that_exist(carbon_cache: CarbonCache) -> None:
    carbon_cache.send_pickle([("fructosa.real.name", (int(time.time()), 1.0))])
    carbon_cache.wait_for("fructosa.real.name")

    with pytest.raises(AssertionError, match=r"(?s)'fructosa\.typo'.*fructosa\.real\.name"):
        carbon_cache.wait_for("fructosa.typo", timeout=0.3)


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    carbon = CarbonCache(tmp_path).start()
    pid, port = carbon.pid, carbon.pickle_port
    assert carbon.running and can_connect(port)

    carbon.stop()
    carbon.stop()  # idempotent

    assert not carbon.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped by stop(), so not even a zombie is left
    assert not can_connect(port)


@pytest.mark.skipif(
    not GraphiteWeb.is_available(),
    reason="graphite-web not installed (pip install graphite-web==1.1.10)",
)
def test_graphite_web_renders_what_carbon_wrote(carbon_cache: CarbonCache) -> None:
    now = int(time.time())
    expected = [(now - 2, 1.0), (now - 1, 2.0), (now, 3.0)]
    carbon_cache.send_pickle([("fructosa.node1.temp", point) for point in expected])
    carbon_cache.wait_for("fructosa.node1.temp", lambda s: len(s) == len(expected))

    with GraphiteWeb(carbon_cache) as graphite:
        [rendered] = graphite.render("fructosa.*.temp", from_="-1min")

    assert rendered["target"] == "fructosa.node1.temp"
    points = [(ts, value) for value, ts in rendered["datapoints"] if value is not None]
    assert points == expected
