"""The agent's scheduling, queueing and sending, in-process against a small
protocol-speaking receiver (the real-master path is in test_end_to_end)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from fructosa.agent import Agent, SampleQueue, next_tick
from fructosa.config import AgentConfig, SensorConfig
from fructosa.sensors import REGISTRY, Sensor, register
from fructosa.wire import protocol
from fructosa.wire.blocks import Block


class Receiver:
    """Plays lmaster: challenge, welcome, records every sample and acknowledges it."""

    def __init__(self) -> None:
        self.samples: list[dict] = []
        self.hellos: list[dict] = []
        self.server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(protocol.encode_json(protocol.CHALLENGE, {"protocol": "fructosa", "version": 1, "nonce": "0"}))
        try:
            while True:
                length = protocol.frame_length(await reader.readexactly(4))
                kind, payload = protocol.split_frame(await reader.readexactly(length))
                if kind == protocol.HELLO:
                    self.hellos.append(protocol.check_hello(payload))
                    writer.write(protocol.encode_json(protocol.WELCOME, {"protocol": "fructosa", "version": 1}))
                elif kind == protocol.DATAPOINTS:
                    batch_id, body = protocol.split_batch(payload)
                    self.samples.extend(samples_of(Block.decode(body)))
                    writer.write(protocol.encode_acks([batch_id]))
        except asyncio.IncompleteReadError:
            writer.close()

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


def samples_of(block: Block) -> list[dict]:
    """The samples a block was flattened from (keys as they appear in paths, digits as ints)."""
    samples: dict[tuple[str, str, float], dict] = {}
    for path, (when, value) in block.datapoints():
        host, sensor, *keys = path.split(".")
        sample = samples.setdefault((host, sensor, when), {"host": host, "sensor": sensor, "time": when, "value": {}})
        if not keys:
            sample["value"] = value
            continue
        node = sample["value"]
        for key in keys[:-1]:
            node = node.setdefault(int(key) if key.isdigit() else key, {})
        node[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return list(samples.values())


class SlowTestSensor(Sensor):
    """Blocks its worker thread for 1 s, like DiskUsage on a hung NFS mount."""

    description = "test only"

    def read(self) -> float:
        time.sleep(1.0)
        return 1.0


@pytest.fixture
def slow_sensor_registered() -> Iterator[None]:
    register(SlowTestSensor)
    yield
    del REGISTRY["SlowTestSensor"]


def agent_config(port: int, *sensors: SensorConfig) -> AgentConfig:
    return AgentConfig(path="test.conf", master_host="127.0.0.1", master_port=port, hostname="t1", sensors=sensors)


async def run_agent_for(config: AgentConfig, seconds: float) -> Agent:
    agent = Agent(config)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(seconds)  # the duration under test, not a synchronisation
    stop.set()
    await task
    return agent


@pytest.mark.usefixtures("slow_sensor_registered")
def test_sensors_tick_on_a_grid_without_drift_and_a_slow_one_stalls_nobody() -> None:
    async def scenario() -> tuple[list[dict], list[dict]]:
        receiver = Receiver()
        port = await receiver.start()
        config = agent_config(
            port,
            SensorConfig("CPUPercent", 0.2, {"percpu": True, "total": True}),
            SensorConfig("SlowTestSensor", 0.2, {}),
        )
        await run_agent_for(config, 3.1)
        receiver.close()
        assert receiver.hellos and receiver.hellos[0]["host"] == "t1"
        by_sensor = lambda name: [s for s in receiver.samples if s["sensor"] == name]  # noqa: E731
        return by_sensor("CPUPercent"), by_sensor("SlowTestSensor")

    fast, slow = asyncio.run(scenario())
    times = [sample["time"] for sample in fast]
    # 3.1 s at 0.2 s: 16 ticks (t=0 … 3.0), unaffected by the sensor blocking 1 s each time.
    assert len(times) >= 15
    for index, when in enumerate(times):
        assert abs(when - (times[0] + index * 0.2)) < 0.08, f"sample {index} drifted"
    # The slow sensor misses ticks instead of piling up work: one sample per second.
    assert 2 <= len(slow) <= 4
    assert all("total" in sample["value"] and 0 in sample["value"] for sample in fast)


def test_samples_taken_while_master_is_away_arrive_oldest_first() -> None:
    async def scenario() -> tuple[list[dict], Agent]:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        agent = Agent(agent_config(port, SensorConfig("VirtualMemory", 0.1, {})))
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        while len(agent.queue) < 10:  # nothing listens yet: the agent buffers
            await asyncio.sleep(0.05)
        receiver = Receiver()
        await receiver.start(port)
        while len(receiver.samples) < 15:
            await asyncio.sleep(0.05)
        stop.set()
        await task
        receiver.close()
        return receiver.samples, agent

    samples, agent = asyncio.run(scenario())
    times = [sample["time"] for sample in samples]
    assert times == sorted(times)
    assert agent.queue.dropped == 0


def test_full_queue_drops_oldest_and_counts() -> None:
    async def scenario() -> SampleQueue:
        queue = SampleQueue(max_samples=3)
        for n in range(5):
            queue.put({"n": n})
        assert [sample["n"] for sample in queue.take(2)] == [2, 3]
        for n in (7, 8, 9):
            queue.put({"n": n})
        return queue

    queue = asyncio.run(scenario())
    assert queue.dropped == 3
    assert [sample["n"] for sample in queue.take(10)] == [7, 8, 9]
    assert not queue.nonempty.is_set()


@pytest.mark.parametrize(
    "now, tick, expected",
    [(0.05, 0, 1), (1.0, 0, 1), (1.01, 0, 2), (5.5, 1, 6), (100.0, 3, 101)],
)
def test_next_tick_skips_missed_ticks(now: float, tick: int, expected: int) -> None:
    assert next_tick(origin=0.0, interval=1.0, now=now, tick=tick) == expected
