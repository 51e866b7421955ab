"""A tick's block handed straight to the sender (Sender.send_tick, Agent.queue_taken with ``send``): the frames,
the queue (its entries, bound and drop count) and the batches left are exactly those of queueing the block and
sending (queue.put, then Sender.send_now), whatever waited before it and whether the session takes it or not."""

from __future__ import annotations

import asyncio
import collections
from array import array
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fructosa.adaptive import AdaptivePlan
from fructosa.agent import Agent, SampleQueue
from fructosa.agent.scheduler import SAME_TICK, SensorScheduler
from fructosa.agent.sender import Sender
from fructosa.config import AgentConfig, SensorConfig
from fructosa.wire import protocol
from fructosa.wire.blocks import Block

HOST = "node01"
TIMEOUT = 20.0


class FakeSession:
    """The session's side that the sender sees: it takes up to ``room`` frames from the outbox when it can send
    (as :meth:`SendingSession.send_now` does), and numbers the batches."""

    def __init__(self, outbox: Sender, can_send: bool, room: int) -> None:
        self.outbox, self.can_send, self.room = outbox, can_send, room
        self.frames: list[bytes] = []
        self.sequence = 0

    def new_batch_id(self) -> bytes:
        self.sequence += 1
        return self.sequence.to_bytes(protocol.BATCH_ID_SIZE, "big")

    def send_now(self) -> bool:
        if not self.can_send:
            return False
        batch = None
        while len(self.frames) < self.room:
            batch = self.outbox.next_frame()
            if batch is None:
                break
            self.frames.append(batch[0])
        return batch is None


def sender_with(max_samples: int, can_send: bool, room: int) -> Sender:
    config = AgentConfig(path="x", master_host="127.0.0.1", master_port=1, hostname=HOST)
    sender = Sender(config, SampleQueue(max_samples), None, None)
    sender.session = FakeSession(sender, can_send, room)  # type: ignore[assignment]
    return sender


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    """A tick's block: a few datapoints (or none) at one time, from one or more samples."""
    count = draw(st.integers(0, 6))
    when = draw(st.floats(0, 2**32))
    numbers = st.floats(allow_nan=False, allow_infinity=False)
    return Block(
        b"\n".join(f"{HOST}.S{draw(st.integers(0, 2))}.f{index}".encode() for index in range(count)),
        array("d", [when]) * count,
        array("d", draw(st.lists(numbers, min_size=count, max_size=count))),
        draw(st.integers(1, 9)),
    )


def state(sender: Sender) -> tuple:
    session: FakeSession = sender.session  # type: ignore[assignment]
    queue = sender.queue
    entries = [(block.encode(), count) for block, count in queue._entries]
    return session.frames, entries, queue.queued, len(queue), queue.dropped, list(sender._ready), session.sequence


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks(), st.lists(blocks(), max_size=3), st.lists(st.binary(min_size=1, max_size=8), max_size=2),
       st.integers(1, 30), st.booleans(), st.integers(0, 4), st.sampled_from([None, 100, 160]))  # fmt: skip
def test_a_tick_block_sent_straight_leaves_what_queueing_and_sending_it_leaves(
    block: Block, earlier: list[Block], ready: list[bytes], max_samples: int, can_send: bool, room: int,
    frame_cap: int | None,
) -> None:  # fmt: skip
    """Byte for byte: the frames sent (a block too big for one frame split as the queue's path splits it), and
    the queue, the encoded batches and the batch ids left behind."""
    cap = protocol.MAX_FRAME if frame_cap is None else frame_cap
    with mock.patch.object(protocol, "MAX_FRAME", cap):
        straight, queued = sender_with(max_samples, can_send, room), sender_with(max_samples, can_send, room)
        for sender in (straight, queued):
            for other in earlier:
                sender.queue.put(Block(other.paths, other.times, other.values, other.samples), other.samples)
            sender._ready.extend(ready)
        straight.send_tick(block)
        queued.queue.put(block, block.samples)
        queued.send_now()
    assert state(straight) == state(queued)
    assert straight._lead is None


def test_a_tick_block_goes_out_without_entering_the_queue_when_nothing_waits() -> None:
    sender = sender_with(100, True, 4)
    block = Block(b"node01.S.a\nnode01.S.b", array("d", [5.0, 5.0]), array("d", [1.0, 2.0]), 2)
    with mock.patch.object(sender.queue, "put", side_effect=AssertionError("queued")):
        sender.send_tick(block)
    (frame,) = sender.session.frames  # type: ignore[attr-defined]
    kind, body = protocol.split_frame(frame[protocol.HEADER_SIZE :])
    assert (
        kind == protocol.DATAPOINTS
        and protocol.frame_length(frame[: protocol.HEADER_SIZE]) == len(frame) - protocol.HEADER_SIZE
    )
    assert Block.decode(body[protocol.BATCH_ID_SIZE :]) == block
    # The session cannot send: the block waits in the queue, counted, as if it had been queued first.
    refused = sender_with(1, False, 4)
    refused.send_tick(block)
    assert refused.queue.queued == 2 and refused.queue.take(10) == [block] and refused._lead is None


Reading = collections.namedtuple("Reading", "total used percent")
Swap = collections.namedtuple("Swap", "sin sout")


def test_an_agent_sends_a_steady_tick_straight_as_the_queued_path_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agent.queue_taken(send=True): the tick's one block (its layouts known) goes to Sender.send_tick and the
    frames equal those of queueing the tick (queue_taken()) and sending (Sender.send_now); a tick with a sample of
    a new shape takes the queued path."""
    now = [1.7e9]
    monkeypatch.setattr("fructosa.agent.lagent.time.time", lambda: now[0])
    ticks = [
        [("Mem", Reading(8, 3, 37.5)), ("Swap", Swap(1, 2))],
        [("Mem", Reading(8, 4, 50.0)), ("Swap", Swap(1, 3))],
        [("Mem", Reading(8, 5, 62.5)), ("Swap", Swap(2, 3))],
        [("Mem", Reading(8, 5, 62.5)), ("Swap", Swap(2, 3)), ("Extra", {"x": 1.0})],
        [("Mem", Reading(9, 5, 55.5)), ("Swap", Swap(2, 4))],
    ]

    def agent() -> Agent:
        made = Agent(AgentConfig(path="x", master_host="127.0.0.1", master_port=1, hostname=HOST))
        made.sender.session = FakeSession(made.sender, True, 32)  # type: ignore[assignment]
        return made

    async def scenario() -> tuple[Agent, Agent, list[int]]:
        straight, queued = agent(), agent()
        straight_ticks: list[int] = []
        send_tick = straight.sender.send_tick

        def counted(block: Block) -> None:
            straight_ticks.append(block.samples)
            send_tick(block)

        straight.sender.send_tick = counted  # type: ignore[method-assign]
        for tick in ticks:
            now[0] += 1.0
            straight.take_all(list(tick))
            straight.queue_taken(True)
            queued.take_all(list(tick))
            queued.queue_taken()
            queued.sender.send_now()
        return straight, queued, straight_ticks

    straight, queued, straight_ticks = asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    frames = straight.sender.session.frames  # type: ignore[attr-defined]
    assert frames == queued.sender.session.frames  # type: ignore[attr-defined]
    assert len(frames) == len(ticks)
    assert straight_ticks == [2, 2, 2]  # all but the first (no layouts yet) and the one with a new shape's sample
    assert straight.counters == queued.counters and len(straight.queue) == len(queued.queue) == 0


class Rider:
    """Work riding on the ticks: it wants one call, from ``due`` on."""

    def __init__(self, due: float) -> None:
        self.due = due
        self.calls: list[float] = []

    def ride(self, now: float) -> bool:
        self.calls.append(now)
        self.due = float("inf")
        return False


def test_a_rider_is_called_at_the_ticks_from_its_due_time_only() -> None:
    """A tick before a rider's ``due`` does not call it; the first one from then on does (once here: it asks for
    no more); a rider due at every tick is called at each."""
    ticks: list[float] = []

    class EveryTick:
        due = float("-inf")

        def ride(self, now: float) -> bool:
            ticks.append(now)
            return False

    async def scenario() -> tuple[Rider, float]:
        loop = asyncio.get_running_loop()
        scheduler = SensorScheduler(AdaptivePlan(), lambda name, value: None)
        due = loop.time() + 0.5
        rider = Rider(due)
        scheduler.riders.extend([rider, EveryTick()])
        scheduler.apply([SensorConfig("CPUStats", 0.1, {})])
        deadline = loop.time() + TIMEOUT
        while not rider.calls or len([now for now in ticks if now > rider.calls[0]]) < 3:
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        await scheduler.stop()
        return rider, due

    rider, due = asyncio.run(asyncio.wait_for(scenario(), TIMEOUT * 2))
    (called,) = rider.calls
    assert called + SAME_TICK >= due and called in ticks
    assert ticks[0] + SAME_TICK < due  # ticks came before its time, without calling it
