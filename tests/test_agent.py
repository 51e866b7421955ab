"""The agent's parts (scheduling, queueing, sending, the sending session it
shares with a relaying lmaster), in-process against small protocol-speaking
receivers on loopback (the real-master path is in test_end_to_end)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from fructosa import graphite_paths
from fructosa.adaptive import AdaptivePlan
from fructosa.agent import Agent, SampleQueue, encode_batches, lagent
from fructosa.agent.scheduler import SensorScheduler
from fructosa.config import AgentConfig, SensorConfig, load_agent_config
from fructosa.sensors import REGISTRY, Sensor, register
from fructosa.wire import protocol
from fructosa.wire.blocks import Block
from fructosa.wire.session import Outbox, SendingSession, connect


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


# -- the sending session (shared with a relaying lmaster) ---------------------


class Peer:
    """Plays the receiving end of sessions: records each connection's frames and
    acknowledges a batch only when the test says so."""

    def __init__(self) -> None:
        self.connections: list[list[tuple[bytes, bytes]]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.arrived = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames: list[tuple[bytes, bytes]] = []
        self.connections.append(frames)
        self.writers.append(writer)
        writer.write(protocol.encode_json(protocol.CHALLENGE, {"protocol": "fructosa", "version": 1, "nonce": "0"}))
        try:
            while True:
                length = protocol.frame_length(await reader.readexactly(4))
                kind, payload = protocol.split_frame(await reader.readexactly(length))
                if kind == protocol.HELLO:
                    writer.write(protocol.encode_json(protocol.WELCOME, {"protocol": "fructosa", "version": 1}))
                else:
                    frames.append((kind, payload))
                    self.arrived.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def batches(self, connection: int = -1) -> list[bytes]:
        """Ids of the batches the connection carried, in order."""
        return [payload[: protocol.BATCH_ID_SIZE] for kind, payload in self.connections[connection]
                if kind == protocol.DATAPOINTS]  # fmt: skip

    def acknowledge(self, *batch_ids: bytes) -> None:
        self.writers[-1].write(protocol.encode_acks(list(batch_ids)))

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, "the peer did not get what was expected in time"
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), 0.1)
            except asyncio.TimeoutError:
                pass

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


class ListOutbox(Outbox):
    """An owner that sends the batches it is given, tagged with their numbers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.waiting: list[tuple[bytes, object]] = []
        self.acknowledged: list[object] = []
        self.added = 0
        self.session = SendingSession(self, logging.getLogger("tests"), max_in_flight=2, heartbeat_interval=0.3)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await connect("127.0.0.1", self.port, None, "t1", None, {}, "test peer")

    def add(self, count: int) -> list[bytes]:
        ids = [self.session.new_batch_id() for _ in range(count)]
        for batch_id in ids:  # tagged with their numbers, from 0
            self.waiting.append((batch_id + Block.of([]).encode(), self.added))
            self.added += 1
        self.session.wake()
        return ids

    def next_batch(self) -> tuple[bytes, object] | None:
        return self.waiting.pop(0) if self.waiting else None

    def on_acknowledged(self, tag: object) -> None:
        self.acknowledged.append(tag)

    def backlog(self) -> dict[str, int]:
        return {"queued": len(self.waiting)}

    def describe_backlog(self) -> str:
        return f"{len(self.waiting)} batches waiting"

    def on_disconnected(self) -> None:
        pass


def run_session(scenario_with: Callable[[Peer, ListOutbox], Awaitable[None]], timeout: float = 20.0) -> None:
    """Runs ``scenario_with(peer, outbox)`` while the outbox's session runs."""

    async def main() -> None:
        peer = Peer()
        outbox = ListOutbox(await peer.start())
        task = asyncio.create_task(outbox.session.run())
        try:
            await scenario_with(peer, outbox)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            peer.close()

    asyncio.run(asyncio.wait_for(main(), timeout))


def test_session_window_holds_batches_until_an_acknowledgement_frees_a_slot() -> None:
    async def scenario(peer: Peer, outbox: ListOutbox) -> None:
        ids = outbox.add(3)
        await peer.wait_for(lambda: len(peer.connections) == 1 and len(peer.batches()) == 2)
        await asyncio.sleep(0.2)  # the window is full: the third must not come (the duration under test)
        assert peer.batches() == ids[:2]
        peer.acknowledge(ids[1])
        await peer.wait_for(lambda: len(peer.batches()) == 3)
        assert peer.batches() == ids
        assert outbox.acknowledged == [1] and list(outbox.session.in_flight) == [ids[0], ids[2]]

    run_session(scenario)


def test_session_resends_unacknowledged_batches_first_and_in_order_after_a_reconnect() -> None:
    async def scenario(peer: Peer, outbox: ListOutbox) -> None:
        outbox.session.max_in_flight = 10
        ids = outbox.add(3)
        await peer.wait_for(lambda: len(peer.connections) == 1 and len(peer.batches()) == 3)
        peer.acknowledge(ids[1])
        await peer.wait_for(lambda: outbox.acknowledged == [1])
        peer.writers[0].close()  # the peer goes away; the session dials again
        await peer.wait_for(lambda: len(peer.connections) == 2)
        later = outbox.add(1)
        await peer.wait_for(lambda: len(peer.batches()) == 3)
        assert peer.batches() == [ids[0], ids[2], *later]  # same ids, oldest first, before anything new
        assert outbox.session.resent == 2 and outbox.session.connects == 2

    run_session(scenario)


def test_session_sends_heartbeats_with_the_backlog_while_idle() -> None:
    async def scenario(peer: Peer, outbox: ListOutbox) -> None:
        outbox.session.max_in_flight = 1
        ids = outbox.add(2)  # one in flight, never acknowledged; one waits: no data can go
        await peer.wait_for(lambda: len(peer.connections) == 1 and len(peer.connections[0]) >= 3, timeout=3)
        assert peer.batches() == ids[:1]
        heartbeats = [payload for kind, payload in peer.connections[0] if kind == protocol.HEARTBEAT]
        assert len(heartbeats) >= 2 and json.loads(heartbeats[0]) == {"queued": 1}

    run_session(scenario)


# -- the agent's parts -------------------------------------------------------


class FirstReadingTestSensor(Sensor):
    """A rate: nothing to say at its first reading, then a counter."""

    description = "test only"

    def __init__(self, settings: dict | None = None) -> None:
        super().__init__(settings)
        self.readings = 0

    def measure(self) -> float | None:
        self.readings += 1
        return None if self.readings == 1 else float(self.readings)


def test_a_sensor_with_nothing_to_report_records_nothing() -> None:
    register(FirstReadingTestSensor)
    recorded: list[tuple[str, object]] = []

    async def scenario() -> None:
        scheduler = SensorScheduler(AdaptivePlan(), lambda name, value: recorded.append((name, value)))
        scheduler.start(SensorConfig("FirstReadingTestSensor", 0.05, {}))
        while len(recorded) < 3:
            await asyncio.sleep(0.05)
        await scheduler.stop()
        scheduler.shutdown()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 10))
    finally:
        del REGISTRY["FirstReadingTestSensor"]
    assert recorded[:3] == [("FirstReadingTestSensor", 2.0), ("FirstReadingTestSensor", 3.0),
                            ("FirstReadingTestSensor", 4.0)]  # fmt: skip


def test_a_sample_is_flattened_once_for_the_plan_the_journal_and_the_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict] = []
    real = graphite_paths.sample_to_datapoints

    def counted(sample: dict) -> list:
        calls.append(sample)
        return real(sample)

    monkeypatch.setattr(lagent, "sample_to_datapoints", counted)
    conf = tmp_path / "lagent.conf"
    conf.write_text(
        f"[lmaster]\nhost = localhost\n[lagent]\nhostname = t1\njournal file = {tmp_path / 'journal'}\n"
        "[sensor:VirtualMemory]\ntime_interval = 60\nfast time_interval = 5\nfast when = VirtualMemory.percent > 99\n"
    )
    config = load_agent_config(str(conf))

    async def scenario() -> list[bytes]:
        agent = Agent(config)
        assert agent.plan.watches("VirtualMemory")  # so the plan reads the sample too
        agent._journal = open(str(config.journal_file), "a", encoding="utf-8")  # noqa: SIM115  (as run() opens it)
        agent.record("VirtualMemory", {"percent": 42.0, "used": 1.0})
        agent._journal.close()
        return encode_batches(agent.queue.take(10), agent.sender.session.new_batch_id)

    (body,) = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert len(calls) == 1
    block = Block.decode(body[protocol.BATCH_ID_SIZE :])
    assert block.samples == 1 and sorted(path for path, _ in block.datapoints()) == [
        "t1.VirtualMemory.percent", "t1.VirtualMemory.used"
    ]  # fmt: skip
    assert len((tmp_path / "journal").read_text().splitlines()) == 2


async def deferring_session_with_one_batch_out(
    peer: Peer, outbox: ListOutbox, heartbeat_interval: float = 60.0, max_in_flight: int | None = 10
) -> list[int]:
    """The agent's kind of session (acknowledgements read at the next wake), connected, with one batch the peer
    has received; returns that batch's ids."""
    session = outbox.session
    session.defer_acks, session.heartbeat_interval = True, heartbeat_interval
    if max_in_flight is not None:
        session.max_in_flight = max_in_flight
    ids = outbox.add(1)
    await peer.wait_for(lambda: len(peer.connections) == 1 and len(peer.batches()) == 1)
    return ids


def test_a_session_deferring_acknowledgements_reads_them_at_the_next_wake() -> None:
    async def scenario(peer: Peer, outbox: ListOutbox) -> None:
        session = outbox.session
        first = await deferring_session_with_one_batch_out(peer, outbox)
        peer.acknowledge(*first)
        await asyncio.sleep(0.3)  # no wake, no heartbeat due: the acknowledgement waits (the duration under test)
        assert outbox.acknowledged == [] and list(session.in_flight) == first
        later = outbox.add(1)  # the agent's next tick
        await peer.wait_for(lambda: outbox.acknowledged == [0] and len(peer.batches()) == 2)
        assert list(session.in_flight) == later

    run_session(scenario)


def test_a_session_deferring_acknowledgements_still_reads_them_for_heartbeats_and_a_full_window() -> None:
    async def scenario(peer: Peer, outbox: ListOutbox) -> None:
        session = outbox.session
        ids = await deferring_session_with_one_batch_out(peer, outbox, heartbeat_interval=0.3, max_in_flight=None)
        peer.acknowledge(*ids)
        await peer.wait_for(lambda: outbox.acknowledged == [0], timeout=5)  # read once the heartbeat goes
        session.heartbeat_interval = 60.0
        ids = outbox.add(3)  # a window of 2: the third waits for an acknowledgement, read at once
        await peer.wait_for(lambda: len(peer.batches()) == 3)
        peer.acknowledge(ids[0])
        await peer.wait_for(lambda: len(peer.batches()) == 4 and outbox.acknowledged == [0, 1], timeout=5)

    run_session(scenario)


def test_a_session_deferring_acknowledgements_sees_the_peer_gone_at_the_next_wake_and_resends() -> None:
    async def scenario(peer: Peer, outbox: ListOutbox) -> None:
        session = outbox.session
        ids = await deferring_session_with_one_batch_out(peer, outbox)
        peer.writers[0].close()  # the peer goes away while the session does not read
        later = outbox.add(1)
        await peer.wait_for(lambda: len(peer.connections) == 2 and len(peer.batches()) == 2, timeout=10)
        assert peer.batches() == [*ids, *later] and session.connects == 2

    run_session(scenario)
