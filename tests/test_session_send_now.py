"""The agent's tick sends its batch from the caller (``SendingSession.send_now``): straight to
the transport while the stream idles, through the stream otherwise; acknowledgements read
at the next tick as with ``wake``."""

from __future__ import annotations

import asyncio

from fructosa.wire.blocks import Block
from tests.test_agent import ListOutbox, Peer, run_session


def queued(outbox: ListOutbox, count: int) -> list[bytes]:
    """Batches for the outbox, without waking its session (a tick's samples being queued)."""
    ids = [outbox.session.new_batch_id() for _ in range(count)]
    for batch_id in ids:
        outbox.waiting.append((batch_id + Block.of([]).encode(), outbox.added))
        outbox.added += 1
    return ids


async def idle(outbox: ListOutbox, peer: Peer, batches: int) -> None:
    """Until the peer has ``batches`` and the session's stream waits for work."""
    await peer.wait_for(lambda: len(peer.connections) == 1 and len(peer.batches()) == batches)
    deadline = asyncio.get_running_loop().time() + 5.0
    while outbox.session._woken is None:
        assert asyncio.get_running_loop().time() < deadline, "the stream did not go idle"
        await asyncio.sleep(0.01)


def test_a_tick_batch_goes_from_the_caller_while_the_stream_idles_and_acks_are_read_next_tick() -> None:
    async def scenario(peer: Peer, outbox: ListOutbox) -> None:
        session = outbox.session
        session.defer_acks, session.heartbeat_interval, session.max_in_flight = True, 60.0, 10
        first = outbox.add(1)
        await idle(outbox, peer, 1)
        peer.acknowledge(*first)
        second = queued(outbox, 1)
        session.send_now()
        assert session.sent == 2 and list(session.in_flight)[-1] == second[0]  # sent before any await
        await peer.wait_for(lambda: peer.batches() == [*first, *second] and outbox.acknowledged == [0])
        third = queued(outbox, 2)
        session.send_now()
        assert session.sent == 4
        await peer.wait_for(lambda: peer.batches() == [*first, *second, *third])

    run_session(scenario)


def test_a_tick_batch_waits_for_the_stream_while_the_transport_holds_data_or_the_window_is_full() -> None:
    async def scenario(peer: Peer, outbox: ListOutbox) -> None:
        session = outbox.session
        session.defer_acks, session.heartbeat_interval = True, 60.0  # a window of 2
        first = outbox.add(1)
        await idle(outbox, peer, 1)
        transport = session._writer.transport  # type: ignore[union-attr]
        buffered = transport.get_write_buffer_size
        transport.get_write_buffer_size = lambda: 1  # type: ignore[method-assign]
        second = queued(outbox, 1)
        session.send_now()
        assert session.sent == 1  # left to the stream, which drains first
        transport.get_write_buffer_size = buffered  # type: ignore[method-assign]
        await peer.wait_for(lambda: peer.batches() == [*first, *second])
        third = queued(outbox, 1)
        session.send_now()
        await asyncio.sleep(0.2)  # the window is full: the third must not go (the duration under test)
        assert peer.batches() == [*first, *second]
        peer.acknowledge(*first)
        await peer.wait_for(lambda: peer.batches() == [*first, *second, *third] and outbox.acknowledged == [0])

    run_session(scenario)
