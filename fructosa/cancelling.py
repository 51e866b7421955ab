"""Cancel asyncio tasks and be sure they ended.

Why: before Python 3.12, ``asyncio.wait_for`` loses a cancel that lands just as
the awaited operation finishes (a connect refused, a read completed): the task
goes on as if nothing happened. A daemon that cancels its helper tasks at
shutdown and then awaits them would wait for ever, and its supervisor's SIGKILL
would skip what shutdown saves (lagent's queued samples into the spool, its
stop line). So cancel again until every task is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

RECANCEL_AFTER = 1.0
"""Seconds to wait for cancelled tasks before cancelling the ones still running again."""


async def cancel_until_done(tasks: Iterable[asyncio.Future], recancel_after: float = RECANCEL_AFTER) -> None:
    """Cancel ``tasks`` and wait until all are done, cancelling again those that go on.

    A task's own exception is retrieved, not raised (as ``gather(..., return_exceptions=True)``):
    the helper logged it where it happened."""
    tasks = list(tasks)
    pending = [task for task in tasks if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        _done, still_running = await asyncio.wait(pending, timeout=recancel_after)
        pending = list(still_running)
    for task in tasks:
        if not task.cancelled():
            task.exception()
