"""lmaster's one flow: every checked block goes to every sink and every tap.

A batch arrives as a ``D`` frame (datapoints the agent flattened itself) or
an ``S`` frame (samples, from simple third-party senders), each with its
batch id. The flow takes it once (:class:`~fructosa.wire.session.BatchLedger`:
a batch id seen before is acknowledged once safe, never relayed again),
checks it (a ``D`` block as a whole, datapoint by datapoint only when that
fails; an ``S`` pickle through the restricted unpickler and the bounded
flattening walk), counts and logs what it refuses, and hands the valid
datapoints as one block to

* every sink, which must make it durable: the batch is acknowledged to its
  agent only when every sink says it holds it safely;
* every tap, which only looks and is never waited for.

The datapoints lmaster makes itself (liveness, job events) take the same
way through :meth:`Flow.emit`, without an acknowledgement.

Back-pressure: the frame loop takes each batch at its turn
(:attr:`Flow.admission`, :mod:`fructosa.master.admission`), which waits
while the sinks are nearly full, so that lmaster stops acknowledging rather
than letting a sink drop what it acknowledged before. lmaster's own
datapoints do not wait (nobody would keep them): while the sinks are over
the high-water mark they are dropped, counted and logged, so they never
take the room of acknowledged data either.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..graphite_paths import Datapoint, FlattenBudget, SampleError, sample_to_datapoints
from ..ratelog import RateLimitedLog
from ..sinks import Sink
from ..taps import Tap
from ..wire import protocol
from ..wire.blocks import Block, BlockError, all_valid, filter_valid
from ..wire.session import BatchLedger
from .admission import Admission

log = logging.getLogger(__package__)  # one logger for all of lmaster, as admins filter on it

DECODE_INLINE_BYTES = 64 * 1024
"""Sample batches up to this size decode on the event loop; larger ones in a
thread, as do datapoint blocks that need checking one datapoint at a time."""


@dataclass
class FlowCounters:
    frames: int = 0
    duplicates: int = 0
    samples: int = 0
    bad_samples: int = 0
    datapoints: int = 0
    bad_datapoints: int = 0
    own_dropped: int = 0
    """lmaster's own datapoints dropped because the sinks were nearly full."""


@dataclass(frozen=True)
class Sender:
    """Who sent a batch: for refusals in the log, the path check, and the taps."""

    host: str
    """The host its hello named."""
    address: str
    """``ip:port`` of the connection."""
    host_prefix: str | None
    """Every path must lie below it (the agent's short host name); None for an allowed relay."""

    @property
    def ip(self) -> str:
        return self.address.rsplit(":", 1)[0]


class Flow:
    """Takes batches and lmaster's own datapoints to the sinks and taps; see the module docstring."""

    def __init__(self, sinks: list[Sink], taps: list[Tap] | None = None, ledger: BatchLedger | None = None) -> None:
        self.sinks = sinks
        self.taps = taps if taps is not None else []
        self.ledger = ledger if ledger is not None else BatchLedger()
        self.counters = FlowCounters()
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decoder")
        self._refusal_log = RateLimitedLog(log, period=300.0)
        self._drop_log = RateLimitedLog(log, period=60.0)
        self.admission = Admission(self.pressure)

    def pressure(self) -> float:
        """The fullest sink's fill (:meth:`fructosa.sinks.Sink.pressure`): 1.0 means it would drop data."""
        return max((sink.pressure() for sink in self.sinks), default=0.0)

    async def take_batch(
        self, kind: bytes, payload: bytes, acknowledge: Callable[[bytes], None], sender: Sender
    ) -> int:
        """Relay one ``D`` or ``S`` batch (or acknowledge a duplicate); the number of new samples.

        ``acknowledge(batch_id)`` runs once every sink holds the batch.
        Raises ProtocolError for a batch that cannot be decoded at all.
        """
        batch_id, body = protocol.split_batch(payload)
        self.counters.frames += 1
        key = (sender.host, batch_id)  # batch ids are per host: another peer's copy takes nothing from this one
        safe = self.ledger.admit(key, functools.partial(acknowledge, batch_id))
        if safe is None:
            self.counters.duplicates += 1
            return 0
        try:
            block = await self.checked_block(kind, body, sender)
        except protocol.ProtocolError:
            self.ledger.forget(key)
            raise
        self.counters.samples += block.samples
        self.counters.datapoints += len(block)
        self.deliver(block, sender.host, safe)
        return block.samples

    def deliver(self, block: Block, host: str | None, on_safe: Callable[[], None] | None = None) -> None:
        """Hand a checked block to every sink, then every tap; ``on_safe`` once every sink holds it."""
        if on_safe is None:
            for sink in self.sinks:
                sink.submit(block)
        elif not self.sinks:
            on_safe()
        else:
            pending = [len(self.sinks)]

            def one_sink_safe() -> None:
                pending[0] -= 1
                if pending[0] == 0:
                    on_safe()

            for sink in self.sinks:
                sink.submit(block, one_sink_safe)
        for tap in self.taps:
            try:
                tap.observe(block, host)
            except Exception as error:  # a tap's bug must not cost an agent its data
                self._refusal_log.log(
                    logging.ERROR, ("tap", tap.name), "tap %s failed: %s: %s", tap.name, type(error).__name__, error
                )
        # the check's time bits served the taps; the sinks may keep the block for seconds, and the bits would
        # add half the size of its numbers to every block they hold
        block.time_lanes = None

    def forget(self, host: str) -> None:
        """The agent table forgot ``host``: every tap drops what it keeps about it (a tap's bug is logged)."""
        for tap in self.taps:
            try:
                tap.forget(host)
            except Exception as error:
                self._refusal_log.log(
                    logging.ERROR, ("tap", tap.name), "tap %s failed: %s: %s", tap.name, type(error).__name__, error
                )

    def emit(self, datapoints: list[Datapoint] | Block) -> None:
        """Send datapoints lmaster makes itself (liveness, job events), as tuples or a block, to every
        sink and tap; dropped (counted) while the sinks are over the high-water mark."""
        if not datapoints:
            return
        if self.pressure() >= self.admission.high:
            self.counters.own_dropped += len(datapoints)
            self._drop_log.log(
                logging.WARNING, "own", "sinks nearly full: dropped %d of lmaster's own datapoints (%d in total)",
                len(datapoints), self.counters.own_dropped,
            )  # fmt: skip
            return
        self.deliver(datapoints if isinstance(datapoints, Block) else Block.of(datapoints), None)

    async def checked_block(self, kind: bytes, body: bytes, sender: Sender) -> Block:
        """The valid datapoints of one batch; what is refused is counted and logged.

        Slow work (unpickling large sample batches, checking a block that failed
        the whole-block check datapoint by datapoint) runs in a worker thread, so
        a hostile 1 MiB frame cannot hold up the other agents.
        """
        loop = asyncio.get_running_loop()
        refusals: list[str] = []
        if kind == protocol.DATAPOINTS:
            try:
                block = Block.decode(body)
            except BlockError as error:
                raise protocol.ProtocolError(f"undecodable datapoints: {error}") from None
        else:
            if len(body) > DECODE_INLINE_BYTES:
                samples, datapoints, errors = await loop.run_in_executor(self._decoder, decode_batch, body)
            else:
                samples, datapoints, errors = decode_batch(body)
            self.counters.bad_samples += len(errors)
            refusals = [str(error) for error in errors]
            block = Block.of(datapoints, samples)
        if not all_valid(block, sender.host_prefix):
            block, wrong = await loop.run_in_executor(self._decoder, filter_valid, block, sender.host_prefix)
            self.counters.bad_datapoints += len(wrong)
            refusals += wrong
        if refusals:
            self._refusal_log.log(
                logging.WARNING, ("refused", sender.ip), "malformed sample from %s skipped: %s (%d in this batch)",
                sender.address, refusals[0], len(refusals),
            )  # fmt: skip
        return block

    def close(self) -> None:
        """Stop the decoder thread and the admission (after the connections are gone)."""
        self.admission.close()
        self._decoder.shutdown(wait=False, cancel_futures=True)


def decode_batch(pickled: bytes) -> tuple[int, list[Datapoint], list[SampleError]]:
    """(samples, datapoints, refusals) of one ``S`` batch; ProtocolError if undecodable.

    One :class:`~fructosa.graphite_paths.FlattenBudget` for the whole batch:
    the bound on values visited holds per frame, not only per sample."""
    samples = protocol.decode_samples(pickled)
    datapoints: list[Datapoint] = []
    errors: list[SampleError] = []
    budget = FlattenBudget()
    for sample in samples:
        try:
            sample_to_datapoints(sample, out=datapoints, budget=budget)
        except SampleError as error:
            errors.append(error)
    return len(samples), datapoints, errors
