"""An agent's session reads lmaster's acknowledgements from its ticks, once ``ack_poll_batches``
batches are in flight (a wake always reads), with no wakeup of their own; a peer that went away is
still seen (by a read, or by the writes of the next ticks) and the batches it had not acknowledged go
again (those it had are read at the connection's end, however long they waited for a poll); the
samples recorded in one callback travel in one batch."""

from __future__ import annotations

import asyncio

from fructosa.agent import Agent
from fructosa.wire import protocol
from fructosa.wire.blocks import Block
from tests.test_agent import ListOutbox, Peer, agent_config, deferring_session_with_one_batch_out, run_session
from tests.test_session_send_now import queued

NEVER = 1 << 30
"""Batches in flight never reached: no tick reads."""


async def until(condition: object, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def tick_until_reconnected(outbox: ListOutbox) -> list[bytes]:
    """Ticks of one batch each, until a write finds the peer's connection gone and the session reconnects
    (within 10 s); the batches they queued."""
    session, later = outbox.session, []
    deadline = asyncio.get_running_loop().time() + 10.0
    while session.connects < 2:
        assert asyncio.get_running_loop().time() < deadline, "the broken connection was not seen"
        later += queued(outbox, 1)
        session.send_now()
        await asyncio.sleep(0.05)
    return later


def test_a_tick_reads_the_acknowledgements_once_enough_batches_are_in_flight_and_a_wake_always() -> None:
    async def scenario(peer: Peer, outbox: ListOutbox) -> None:
        session = outbox.session
        first = await deferring_session_with_one_batch_out(peer, outbox)
        session.ack_poll_batches = 1
        peer.acknowledge(*first)
        second = queued(outbox, 1)
        session.send_now()  # one batch in flight: reads, then sends
        await peer.wait_for(lambda: outbox.acknowledged == [0] and peer.batches() == [*first, *second])
        session.ack_poll_batches = NEVER
        peer.acknowledge(*second)
        await asyncio.sleep(0.3)  # the acknowledgement waits in the socket (the duration under test)
        third = queued(outbox, 1)
        session.send_now()  # fewer batches in flight than ack_poll_batches: sends, does not read
        await peer.wait_for(lambda: peer.batches() == [*first, *second, *third])
        await asyncio.sleep(0.3)  # (the duration under test)
        assert outbox.acknowledged == [0] and list(session.in_flight) == [*second, *third]
        session.ack_poll_batches = 2
        peer.acknowledge(*third)
        await asyncio.sleep(0.3)
        fourth = queued(outbox, 1)
        session.send_now()  # two batches in flight: reads both acknowledgements, then sends
        assert outbox.acknowledged == [0, 1, 2] and list(session.in_flight) == fourth

    run_session(scenario)


def test_a_batch_unacknowledged_at_two_reads_makes_the_transport_read_until_it_is() -> None:
    async def scenario(peer: Peer, outbox: ListOutbox) -> None:
        session = outbox.session
        first = await deferring_session_with_one_batch_out(peer, outbox)  # reading stops with it in flight
        second = queued(outbox, 1)
        session.send_now()  # reads: nothing for the first yet, so it is late
        await peer.wait_for(lambda: peer.batches() == [*first, *second])
        peer.acknowledge(*first)  # no tick, no wake: read on arrival
        await until(lambda: outbox.acknowledged == [0], "the late acknowledgement was not read on arrival")

    run_session(scenario)


def test_a_peer_gone_between_reads_is_seen_by_the_next_ticks_writes_and_the_batches_go_again() -> None:
    async def scenario(peer: Peer, outbox: ListOutbox) -> None:
        session = outbox.session
        first = await deferring_session_with_one_batch_out(peer, outbox)
        session.ack_poll_batches = 1
        later: list[bytes] = queued(outbox, 1)
        session.send_now()  # this tick reads (nothing yet: the first is late); the next ones only write
        session.ack_poll_batches = NEVER
        await peer.wait_for(lambda: peer.batches() == [*first, *later])
        peer.acknowledge(*first)
        await until(lambda: outbox.acknowledged == [0], "the acknowledgement was not read")
        peer.writers[0].close()
        later += await tick_until_reconnected(outbox)
        await peer.wait_for(lambda: len(peer.connections) == 2 and set(later) <= set(peer.batches()), timeout=10)
        resent = peer.batches()
        assert resent == sorted(resent, key=later.index) and resent[-1] == later[-1]  # in order, none lost
        assert first[0] not in resent  # acknowledged: not sent again

    run_session(scenario)


def test_samples_recorded_in_one_callback_travel_in_one_batch_sent_without_a_stream_pass() -> None:
    async def scenario() -> None:
        peer = Peer()
        agent = Agent(agent_config(await peer.start()))
        session = agent.sender.session
        task = asyncio.create_task(session.run())
        try:
            await until(lambda: session._woken is not None, "the session did not connect and go idle")
            waiting, sent = session._woken, session.sent
            for value in (1.0, 2.0, 3.0):
                agent.record("TestSensor", {"value": value})
            assert session.sent == sent  # not before the callback that recorded them ends
            await peer.wait_for(lambda: len(peer.connections) == 1 and len(peer.batches()) == 1)
            block = Block.decode(peer.connections[0][0][1][protocol.BATCH_ID_SIZE :])
            assert block.samples == 3 and list(block.values) == [1.0, 2.0, 3.0]
            assert session._woken is waiting  # sent from the callback: the stream's wait went on
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            peer.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_acknowledgements_left_in_the_socket_are_read_when_the_connection_ends_and_those_batches_not_resent() -> None:
    async def scenario(peer: Peer, outbox: ListOutbox) -> None:
        session = outbox.session
        first = await deferring_session_with_one_batch_out(peer, outbox)  # reading stops with it in flight
        session.ack_poll_batches = NEVER
        second = queued(outbox, 1)
        session.send_now()  # no read: the transport does not read, no tick polls
        await peer.wait_for(lambda: peer.batches() == [*first, *second])
        peer.acknowledge(*first, *second)
        await asyncio.sleep(0.3)  # the acknowledgements wait in the socket (the duration under test)
        assert outbox.acknowledged == [] and list(session.in_flight) == [*first, *second]
        peer.writers[0].close()
        later = await tick_until_reconnected(outbox)
        assert outbox.acknowledged[:2] == [0, 1]  # read at the connection's end
        await peer.wait_for(lambda: len(peer.connections) == 2 and set(later) <= set(peer.batches()), timeout=10)
        resent = peer.batches()
        assert not set(resent) & {*first, *second}  # acknowledged: not sent again
        assert resent == sorted(resent, key=later.index) and resent[-1] == later[-1]  # in order, none lost

    run_session(scenario)
