"""lagent: runs the configured sensors and streams their samples to lmaster.

Delivery is at-least-once. Samples are sent in numbered batches and kept
until lmaster acknowledges them (it does so once they are safe on its side).
While lmaster is unreachable, batches go to a disk spool that survives a
restart of the agent; when lmaster is back, live samples go first and the
backlog drains in between, oldest first. Without a usable spool the agent
buffers in memory only. Every drop is counted and logged.

The parts: :mod:`.lagent` (the daemon: composition, run and reload),
:mod:`.scheduler` (the sensors on one grid, measured tick by tick), :mod:`.queue` (the bounded
sample queue), :mod:`.sender` (batches, the spool, the session to lmaster)
and :mod:`.report` (self-metrics and the status file); adaptive sampling's
plan is :class:`fructosa.adaptive.AdaptivePlan`. All of them log as
``fructosa.agent``.
"""

from .lagent import FLUSH_TIMEOUT, Agent
from .queue import SampleQueue
from .sender import MAX_SAMPLES_PER_BATCH, MAX_UNACKNOWLEDGED, Sender, encode_batches

__all__ = [
    "FLUSH_TIMEOUT",
    "MAX_SAMPLES_PER_BATCH",
    "MAX_UNACKNOWLEDGED",
    "Agent",
    "SampleQueue",
    "Sender",
    "encode_batches",
]
