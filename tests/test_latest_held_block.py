"""The latest-value store holds each host's last block unstored (fructosa/taps/latest.py).

Whatever order blocks come in (repeated times, older resends, other layouts,
single datapoints from a relay), what it answers must be what storing every
block at once would give: per path, the value of the newest time, the later
arrival winning a tie.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fructosa.taps.latest import LatestValues
from fructosa.wire.blocks import Block

PROPERTIES = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

LAYOUTS = (("a", "b", "c"), ("a", "b", "c"), ("c", "a"), ("d",))
times = st.sampled_from([0.0, 1.0, 2.0, 2.0, 3.0, 1e9, 1e9 + 0.5])
blocks = st.lists(
    st.tuples(st.integers(0, len(LAYOUTS) - 1), st.lists(times, min_size=3, max_size=3), st.booleans()),
    min_size=1, max_size=25,
)  # fmt: skip


@PROPERTIES
@given(blocks)
def test_answers_are_those_of_storing_every_block_in_turn(sequence: list) -> None:
    store = LatestValues()
    expected: dict[str, tuple[float, float]] = {}
    for number, (layout, block_times, through_relay) in enumerate(sequence):
        paths = LAYOUTS[layout]
        points = [(f"node1.S.{name}", (block_times[i], float(number))) for i, name in enumerate(paths)]
        for path, (when, value) in points:
            if path not in expected or when >= expected[path][0]:
                expected[path] = (when, value)
        store.observe(Block.of(points), None if through_relay else "node1")
        if number % 5 == 4:  # reads in between store what is held
            assert store.latest("node1") == expected
    assert store.latest("node1") == expected
    assert store.get("node1", "S.a") == expected.get("node1.S.a")


def test_held_blocks_stored_in_slices_pause_between_slices_and_answer_the_same() -> None:
    from fructosa.taps import latest

    store, twin = LatestValues(), LatestValues()
    per_host = 100
    hosts = [f"node{index:03d}" for index in range(3 * latest.SLICE_VALUES // per_host)]
    for number in range(2):  # the second block of each host is held, the first stored
        for host in hosts:
            block = Block.of([(f"{host}.S.v{i}", (1000.0 + number, float(number * i))) for i in range(per_host)])
            store.observe(block, host)
            twin.observe(block, host)
    pauses = sum(1 for _ in store.store_held_in_slices())
    assert pauses == 3  # one after every SLICE_VALUES values
    assert all(store._hosts[host].held is None for host in hosts)
    assert store.snapshot() == twin.snapshot()  # the twin stores what it holds inside snapshot()
    assert list(store.store_held_in_slices(["unknown", hosts[0]])) == []  # nothing held, unknown host skipped
