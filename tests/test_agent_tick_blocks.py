"""One block per tick: the samples of one tick, queued together, carry exactly the datapoints
their one-sample blocks carry (fructosa.agent.layouts.LayoutCache.tick_block, Agent.queue_taken);
psutil's namedtuples stand for their plain form (Sensor.measure_compact); the queue counts samples.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fructosa.agent import Agent, SampleQueue, encode_batches
from fructosa.agent.layouts import LayoutCache, plain
from fructosa.config import AgentConfig, SensorConfig
from fructosa.config.agent import load_agent_config
from fructosa.graphite_paths import SampleError, sample_to_datapoints
from fructosa.sensors import REGISTRY, Sensor, register
from fructosa.wire import protocol
from fructosa.wire.blocks import Block
from tests.test_agent_layouts import full_block, relabel, through_cache, values

HOST = "node01"


@st.composite
def records(draw: st.DrawFn) -> tuple:
    """A psutil-like namedtuple: a few fields, mostly numbers (sometimes not, or not finite)."""
    fields = draw(st.lists(st.sampled_from(["total", "used", "free", "percent", "sin", "b"]), min_size=1, max_size=5,
                           unique=True))  # fmt: skip
    leaf = st.integers(0, 2**40) | st.floats(0, 1e12) | st.sampled_from([math.nan, math.inf, None, "x", 10**400])
    kind = collections.namedtuple("Reading", fields)  # type: ignore[misc]
    return kind(*draw(st.lists(leaf, min_size=len(fields), max_size=len(fields))))


def one_by_one(cache: LayoutCache, sensor: str, when: float, value: object) -> Block | None:
    """What lagent does with a sample on its own: its remembered layout, else full flattening of its plain form."""
    block = cache.block(HOST, sensor, when, value)
    if block is not None:
        return block
    try:
        datapoints = sample_to_datapoints({"host": HOST, "sensor": sensor, "time": when, "value": plain(value)})
    except SampleError:
        return None
    return cache.learn(HOST, sensor, value, datapoints)


def datapoints_of(blocks: list[Block | None]) -> list:
    return [point for block in blocks if block is not None for point in block.datapoints()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(values | records(), min_size=1, max_size=5), st.lists(st.integers(0, 3), max_size=4),
       st.floats(0, 2**32 - 1))  # fmt: skip
def test_a_tick_block_carries_what_the_samples_one_by_one_carry(first: list, repeats: list[int], when: float) -> None:
    cache = LayoutCache()
    samples = [(f"S{index}", value) for index, value in enumerate(first)]
    ticks = [samples, samples, samples]  # learnt, then remembered, then the same tick again
    for shift in repeats:  # other leaves, or another sample's shape, in some places
        other_leaves = itertools.cycle([1, 2.5, math.nan, "t", True])
        ticks.append([(name, relabel(plain(value), other_leaves) if (index + shift) % 3 == 0 else value)
                      for index, (name, value) in enumerate(samples)])  # fmt: skip
        ticks.append(samples)  # and back
    for tick in ticks:
        block, left = cache.tick_block(HOST, when, tick)
        left_ids = {id(sample) for sample in left}
        taken = [sample for sample in tick if id(sample) not in left_ids]
        assert [name for name, _ in taken] + [name for name, _ in left] == sorted(
            [name for name, _ in tick], key=[name for name, _ in taken + left].index
        ) and len(taken) + len(left) == len(tick)
        if block is None:
            assert not taken
        else:
            assert block.samples == len(taken)
            expected = [full_block(HOST, name, when, plain(value)) for name, value in taken]
            assert None not in expected
            assert block.datapoints() == datapoints_of(expected)
            assert block.encode() == Block.of(datapoints_of(expected), samples=len(taken)).encode()
        for name, value in left:  # what the agent does with them: each on its own
            got = one_by_one(cache, name, when, value)
            expected_one = full_block(HOST, name, when, plain(value))
            assert (got is None) == (expected_one is None)
            assert got is None or got.encode() == expected_one.encode()  # type: ignore[union-attr]


def test_a_namedtuple_is_remembered_by_its_type_only_when_every_field_is_a_number() -> None:
    reading = collections.namedtuple("Reading", "total used percent")
    cache = LayoutCache()
    assert cache.tick_block(HOST, 10.0, [("Mem", reading(8, 3, 37.5))]) == (None, [("Mem", reading(8, 3, 37.5))])
    one_by_one(cache, "Mem", 10.0, reading(8, 3, 37.5))
    block, left = cache.tick_block(HOST, 11.0, [("Mem", reading(9, 4, 44.4))])
    assert left == [] and block is not None
    assert block.datapoints() == [("node01.Mem.total", (11.0, 9.0)), ("node01.Mem.used", (11.0, 4.0)),
                                  ("node01.Mem.percent", (11.0, 44.4))]  # fmt: skip
    assert cache.block(HOST, "Mem", 11.0, {"total": 9, "used": 4, "percent": 44.4}) is None  # its dict: another shape
    other = collections.namedtuple("Reading", "total used percent")  # same fields, another type: flattened in full
    assert cache.tick_block(HOST, 12.0, [("Mem", other(1, 2, 3))])[0] is None
    with_text = collections.namedtuple("Named", "name size")
    one_by_one(cache, "N", 10.0, with_text("sda", 5))
    assert cache.block(HOST, "N", 11.0, with_text("sdb", 6)) is None  # kept as a dict's layout: no shortcut
    assert cache.block(HOST, "Mem", 12.0, reading(1, math.nan, 3)) is None  # left out by full flattening


def test_the_same_tick_again_is_taken_as_the_last_one_and_any_difference_goes_the_long_way() -> None:
    reading = collections.namedtuple("Reading", "total used percent")
    swap = collections.namedtuple("Swap", "sin sout")
    cache = LayoutCache()
    tick = [("Mem", reading(8, 3, 37.5)), ("Swap", swap(1, 2))]
    for name, value in tick:
        one_by_one(cache, name, 10.0, value)
    expected = [full_block(HOST, name, 11.0, plain(value)) for name, value in tick]
    for _ in range(2):  # remembered from the layouts, then as the last tick
        block, left = cache.tick_block(HOST, 11.0, tick)
        assert left == [] and block is not None and block.samples == 2
        assert block.encode() == Block.of(datapoints_of(expected), samples=2).encode()
    assert cache._last_tick is not None
    other_type = collections.namedtuple("Swap", "sin sout")
    for changed in (
        [tick[1], tick[0]],  # another order
        [tick[0]],  # a sensor less
        [tick[0], ("Swap", other_type(1, 2))],  # another type, the same fields
        [tick[0], ("Swap", swap(1, "x"))],  # a field that is not a number
        [tick[0], ("Swap", swap(1, math.inf))],  # a value full flattening leaves out
        [tick[0], ("Swap", swap(1, 10**400))],  # beyond a double
    ):
        block, left = cache.tick_block(HOST, 12.0, changed)
        taken = [sample for sample in changed if sample not in left]
        if block is None:
            assert left == changed or not taken
        else:
            wanted = [full_block(HOST, name, 12.0, plain(value)) for name, value in taken]
            assert block.encode() == Block.of(datapoints_of(wanted), samples=len(taken)).encode()
        assert all(sample[0] != "Swap" or type(sample[1]) is swap for sample in taken)
        assert all(math.isfinite(value) for value in (block.values if block else ()))
    assert cache.tick_block("node02", 12.0, tick)[0] is None  # another host: its own layouts (none yet)


def test_joined_paths_follow_a_sensor_whose_shape_changed() -> None:
    cache = LayoutCache()
    tick = [("A", {"x": 1.0}), ("B", {"y": 2.0})]
    for name, value in tick:
        through_cache(cache, HOST, name, 1.0, value)
    assert cache.tick_block(HOST, 2.0, tick)[0].path_list() == ["node01.A.x", "node01.B.y"]  # type: ignore[union-attr]
    through_cache(cache, HOST, "A", 3.0, {"z": 5.0, "w": 6.0})  # A's new shape, learnt
    block, left = cache.tick_block(HOST, 4.0, [("A", {"z": 7.0, "w": 8.0}), ("B", {"y": 9.0})])
    assert left == [] and block is not None
    assert block.datapoints() == [("node01.A.z", (4.0, 7.0)), ("node01.A.w", (4.0, 8.0)), ("node01.B.y", (4.0, 9.0))]


def test_the_queue_counts_samples_and_takes_or_drops_whole_entries() -> None:
    async def scenario() -> None:
        queue: SampleQueue[str] = SampleQueue(max_samples=10)
        queue.put("tick1", 4)
        queue.put("one")
        queue.put("tick2", 4)
        assert len(queue) == 9 and queue.dropped == 0
        queue.put("tick3", 4)  # 13 > 10: the oldest entry goes, with its 4 samples
        assert len(queue) == 9 and queue.dropped == 4
        assert queue.take(5) == ["one", "tick2"]  # 1 + 4 samples
        assert queue.take(1) == ["tick3"]  # at least one entry, even over the limit
        assert len(queue) == 0 and not queue.nonempty.is_set() and queue.take(5) == []
        queue.put("huge", 30)  # alone over the bound: the newest entry stays
        assert len(queue) == 30 and queue.dropped == 4
        queue.put("next", 2)
        assert queue.dropped == 34 and queue.take(0) == [] and queue.take(100) == ["next"]

    asyncio.run(asyncio.wait_for(scenario(), 10))


def agent_with(*sensors: SensorConfig) -> Agent:
    return Agent(AgentConfig(path="x", master_host="127.0.0.1", master_port=1, hostname=HOST, sensors=sensors))


def test_an_agent_queues_a_tick_as_one_block_equal_to_its_samples_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    reading = collections.namedtuple("Reading", "total percent")
    ticks = [[("CPUPercent", {0: 1.5, 1: 2.5}), ("Mem", reading(8, 10.0)), ("Net", {"eth0": {"rx": 5}})],
             [("CPUPercent", {0: 3.5, 1: 4.5}), ("Mem", reading(8, 20.0)), ("Net", {"eth0": {"rx": 6}})]]  # fmt: skip
    monkeypatch.setattr("fructosa.agent.lagent.time.time", lambda: 1.7e9)

    async def scenario() -> tuple[list[bytes], list[bytes], Agent]:
        ticking, alone = agent_with(), agent_with()
        for tick in ticks:
            queued = len(ticking.queue)
            for name, value in tick:
                ticking.take(name, value)
                alone.record(name, value)
            assert len(ticking.queue) == queued  # held until the tick's end
            ticking.queue_taken()
        assert len(ticking.queue) == len(alone.queue) == 6
        ids = itertools.count()
        new_id = lambda: next(ids).to_bytes(protocol.BATCH_ID_SIZE, "big")  # noqa: E731
        return (
            encode_batches(ticking.queue.take(100), new_id),
            encode_batches(alone.queue.take(100), new_id),
            ticking,
        )

    together, alone, ticking = asyncio.run(asyncio.wait_for(scenario(), 10))
    (got,), (expected,) = (
        [Block.decode(body[protocol.BATCH_ID_SIZE :]) for body in bodies] for bodies in (together, alone)
    )
    assert got.samples == expected.samples == 6
    assert got.datapoints() == expected.datapoints()
    assert ticking.counters["samples"] == 6 and ticking.layouts.hits == 3  # the second tick: one block from layouts


def test_a_watched_sensor_is_shown_to_the_plan_from_a_tick(tmp_path: Path) -> None:
    conf = tmp_path / "lagent.conf"
    conf.write_text(
        "[lmaster]\nhost = localhost\n[lagent]\nhostname = node01\n"
        "[sensor:VirtualMemory]\ntime_interval = 60\nfast time_interval = 5\nfast when = VirtualMemory.percent > 50\n"
        "[sensor:CPUStats]\ntime_interval = 60\n"
    )
    config = load_agent_config(str(conf))

    async def scenario() -> tuple[Agent, list[Block]]:
        agent = Agent(config)
        agent.take("CPUStats", {"ctx_switches": 5})
        agent.take("VirtualMemory", {"percent": 90.0})
        agent.queue_taken()
        return agent, agent.queue.take(10)

    agent, blocks = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert [block.path_list() for block in blocks] == [["node01.CPUStats.ctx_switches"],
                                                       ["node01.VirtualMemory.percent"]]  # fmt: skip
    vm = next(sensor for sensor in config.sensors if sensor.name == "VirtualMemory")
    assert agent.plan.interval(vm) == 5.0  # the plan read 90 % from the tick's sample


class CounterTestSensor(Sensor):
    """Counts its own measurements: a sensor of the loop (never blocks)."""

    description = "test only"
    blocking = False

    def __init__(self, settings: dict | None = None) -> None:
        super().__init__(settings)
        self.count = 0

    def measure(self) -> dict:
        self.count += 1
        return {"count": self.count}


def test_the_self_report_rides_on_the_tick_of_the_same_grid_point() -> None:
    register(CounterTestSensor)
    config = AgentConfig(path="x", master_host="127.0.0.1", master_port=1, hostname="t1",  # nothing listens
                         sensors=(SensorConfig("CounterTestSensor", 0.1, {}),), self_metrics_interval=0.3)  # fmt: skip

    async def scenario() -> list[Block]:
        agent = Agent(config)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        deadline = asyncio.get_running_loop().time() + 30
        while agent.reporter._previous[0] == 0 or agent.counters["samples"] < 12:  # a few reports made
            assert asyncio.get_running_loop().time() < deadline, "no reports"
            await asyncio.sleep(0.05)
        stop.set()
        await task
        return agent.queue.take(10_000)

    try:
        blocks = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        del REGISTRY["CounterTestSensor"]
    times: dict[str, set[float]] = {"fructosa": set(), "CounterTestSensor": set()}
    for block in blocks:
        for path, (when, _) in block.datapoints():
            times[path.split(".")[1]].add(when)
    assert len(times["fructosa"]) >= 2
    assert times["fructosa"] <= times["CounterTestSensor"]  # taken with a tick's samples, never on its own


def test_a_waiter_on_the_queue_is_woken_by_the_next_put_and_the_flag_follows_the_queue() -> None:
    async def scenario() -> None:
        queue: SampleQueue[str] = SampleQueue(max_samples=10)
        queue.put("early", 2)
        assert queue.nonempty.is_set()  # made on first use: set, samples were queued before
        assert queue.take(10) == ["early"] and not queue.nonempty.is_set()
        waiter = asyncio.create_task(queue.nonempty.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        queue.put("tick", 3)
        await asyncio.wait_for(waiter, timeout=10)
        assert queue.nonempty.is_set() and queue.take(10) == ["tick"] and not queue.nonempty.is_set()

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))
