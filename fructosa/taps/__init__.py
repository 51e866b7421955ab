"""Taps: parts of lmaster that look at every datapoint without keeping it.

A *sink* (:mod:`fructosa.sinks`) is where datapoints are kept: it must make
each block durable and decides when a batch may be acknowledged to its
agent. A *tap* only looks: lmaster's flow hands it every block it has
checked (from agents and relays) and every block of datapoints lmaster makes
itself (liveness, job events), and never waits for it. So a tap cannot lose
data nor hold up an agent, and a slow tap must drop or coalesce rather than
queue without bound.

What plugs in here:

* a latest-value store: the last value of every path, for an HTTP API and
  dashboards that ask "what is it now";
* a stream hub: live datapoints pushed to WebSocket subscribers by path pattern;
* an alarm evaluator: rules on paths (thresholds, silence) checked as
  datapoints arrive, alarms raised and cleared;
* Prometheus exposition: the latest values as a ``/metrics`` page.

A tap is built with lmaster (``Master(..., taps=[...])``); its :meth:`Tap.run`
task runs from lmaster's start to its stop, then :meth:`Tap.close` is awaited.
"""

from __future__ import annotations

from array import array

from ..wire.blocks import Block


def common_time(times: array) -> float | None:
    """The time of every datapoint of a block when they all have the same one, else None.

    lagent stamps the samples of one tick with the tick's time, so a block it sends has one time
    throughout (several when a backlog joins ticks). A tap that must compare a block's times with a
    bound or with another block's can then compare one number: finding out costs a copy of the times'
    bytes and one comparison in C (about 0.3 µs for 500 datapoints), where picking or converting the
    times costs several µs. Equal bits are equal times; times equal as numbers but not in their bits
    (0.0 and -0.0) count as different, which only sends the tap the long way.
    """
    if times is _last_asked[0]:
        return _last_asked[1]
    count = len(times)
    data = times.tobytes()
    answer = times[0] if count and data == data[:8] * count else None
    _last_asked[:] = times, answer
    return answer


_last_asked: list = [None, None]
"""The times :func:`common_time` was last asked about, and its answer: the taps of one block ask in turn, and a
block is never changed once checked (:meth:`Tap.observe`), so the same array has the same answer."""


class Tap:
    """Looks at checked blocks; see the module docstring."""

    name: str = "tap"

    def observe(self, block: Block, host: str | None) -> None:
        """Look at one checked block; must return quickly and never raise.

        Paths are full Graphite paths without lmaster's ``[Graphite] prefix``,
        the node first. ``host`` is the sender as its hello named it (an agent,
        or a relaying lmaster whose block holds many hosts' paths), None for
        datapoints lmaster makes itself. The block is shared with the sinks:
        read it, never change it. Called on the event loop.
        """
        raise NotImplementedError

    def forget(self, host: str) -> None:
        """lmaster forgot ``host`` (silent too long, or evicted from a full agent table): drop what is kept
        about it; the default keeps nothing per host."""

    async def run(self) -> None:
        """Background work (serving, evaluating) until cancelled; the default has none."""

    async def close(self) -> None:
        """Release what :meth:`run` held, at lmaster's stop; the default has nothing to release."""
