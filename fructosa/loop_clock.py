"""An event loop's clock as a plain function.

Why: asyncio's ``loop.time()`` is ``time.monotonic()`` behind a Python method. lagent reads its loop's
clock after every sensor of a tick and again when the tick's batch goes out, once a second with cold
caches, where each Python frame counts; the function itself reads the same clock without one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``time.monotonic`` where ``loop``'s ``time()`` is asyncio's (which returns exactly that), else ``loop.time``."""
    return time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
