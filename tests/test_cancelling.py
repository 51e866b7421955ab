"""cancel_until_done: a helper task that goes on after a lost cancel still ends."""

from __future__ import annotations

import asyncio

import pytest

from fructosa.cancelling import cancel_until_done


async def _stubborn(swallowed: list[int]) -> None:
    """Swallows its first cancel, as a task whose ``wait_for`` lost one (Python < 3.12)."""
    try:
        await asyncio.sleep(100)
    except asyncio.CancelledError:
        swallowed.append(1)
    await asyncio.sleep(100)


async def _failing() -> None:
    raise RuntimeError("a helper's own failure")


@pytest.mark.timeout(30)
def test_tasks_that_go_on_after_a_cancel_are_cancelled_again_until_done() -> None:
    async def scenario() -> None:
        swallowed: list[int] = []
        stubborn = asyncio.create_task(_stubborn(swallowed))
        failing = asyncio.create_task(_failing())
        plain = asyncio.create_task(asyncio.sleep(100))
        await asyncio.sleep(0)  # all three started
        await asyncio.wait_for(cancel_until_done([stubborn, failing, plain], recancel_after=0.05), timeout=20)
        assert swallowed == [1]  # the first cancel was lost, the second ended it
        assert stubborn.cancelled() and plain.cancelled()
        assert isinstance(failing.exception(), RuntimeError)  # retrieved, not raised

    asyncio.run(scenario())


@pytest.mark.timeout(30)
def test_nothing_to_cancel_returns_at_once() -> None:
    async def scenario() -> None:
        done = asyncio.create_task(asyncio.sleep(0))
        await done
        await asyncio.wait_for(cancel_until_done([done]), timeout=5)
        await asyncio.wait_for(cancel_until_done([]), timeout=5)

    asyncio.run(scenario())
