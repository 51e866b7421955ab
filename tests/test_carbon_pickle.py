"""carbon pickle frames written straight from blocks (fructosa/sinks/carbon_pickle.py).

The encoder writes pickle opcodes itself instead of calling ``pickle.dumps``
on a list of tuples, so these tests hold it to what carbon reads: every frame
unpickles (``pickle.loads``, the core of carbon's own unpickler) to exactly
the list of ``(path, (timestamp, value))`` tuples ``pickle.dumps`` would have
written, prefix included, within carbon's limits (≤ 500 datapoints and
< 1 MiB a frame); a real carbon-cache stores what the sink writes with it
(tests/test_carbon_sink.py), and the resend window written again after carbon
restarts lands too.
"""

from __future__ import annotations

import asyncio
import math
import pickle
import struct
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fructosa.sinks.carbon import CarbonPickleSink
from fructosa.sinks.carbon_pickle import (
    CARBON_DATAPOINTS_PER_FRAME,
    CARBON_MAX_FRAME,
    CarbonPickleEncoder,
    carbon_frames,
    datapoints_of_frames,
)
from fructosa.wire.blocks import Block
from tests.support.carbon import CarbonCache
from tests.support.waiting import wait_for

PROPERTIES = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

components = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=30)
paths = st.lists(components, min_size=1, max_size=6).map(".".join)
# Any double may reach the encoder from a spool or a relay (the sink does not judge): NaN and infinities too.
doubles = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1.7e308]))
datapoints = st.lists(st.tuples(paths, st.tuples(doubles, doubles)), max_size=1200)
prefixes = st.one_of(st.just(""), st.lists(components, min_size=1, max_size=2).map(".".join))


def unframe_all(frames: list[bytes]) -> list[list]:
    """Every frame's datapoints; each frame's length header must match its pickle."""
    result = []
    for frame in frames:
        (length,) = struct.unpack("!L", frame[:4])
        assert length == len(frame) - 4
        result.append(pickle.loads(frame[4:]))
    return result


def bits(datapoints: list) -> list:
    """Datapoints with their doubles as bytes: NaN equals NaN, -0.0 differs from 0.0 (the same bits travel)."""
    return [(type(path), path, struct.pack("<dd", when, value)) for path, (when, value) in datapoints]


@PROPERTIES
@given(datapoints, prefixes)
def test_frames_unpickle_to_exactly_the_tuples_pickle_dumps_would_write(points: list, prefix: str) -> None:
    expected = [(f"{prefix}.{path}" if prefix else path, (float(when), float(value))) for path, (when, value) in points]
    frames = CarbonPickleEncoder(prefix).frames(Block.of(points))
    chunks = unframe_all(frames)
    assert all(type(chunk) is list and 0 < len(chunk) <= CARBON_DATAPOINTS_PER_FRAME for chunk in chunks)
    assert all(type(point) is tuple and type(point[1]) is tuple for chunk in chunks for point in chunk)
    got = [point for chunk in chunks for point in chunk]
    assert bits(got) == bits(expected)
    # What pickle.dumps writes of the same list reads back the same (the reference carbon-relay writes).
    assert bits(pickle.loads(pickle.dumps(expected, protocol=2))) == bits(got)
    assert bits(datapoints_of_frames(b"".join(frames))) == bits(expected)


@PROPERTIES
@given(st.lists(st.tuples(paths, st.tuples(doubles, doubles)), min_size=1, max_size=40), prefixes)
def test_a_kept_layout_gives_the_same_frames_as_a_new_encoder(points: list, prefix: str) -> None:
    """The second block of the same paths (the layout kept) with other numbers encodes as a fresh encoder would."""
    encoder = CarbonPickleEncoder(prefix)
    encoder.frames(Block.of(points))
    others = [(path, (when + 1.0, -value)) for path, (when, value) in points]
    assert encoder.frames(Block.of(others)) == CarbonPickleEncoder(prefix).frames(Block.of(others))


def test_frames_respect_carbons_size_limit_with_long_paths() -> None:
    long_paths = [("x" * 2200 + f".{i}", (1.0, float(i))) for i in range(499)]  # > 1 MiB in one chunk
    frames = carbon_frames(Block.of(long_paths), "hpc")
    assert len(frames) > 1 and all(len(frame) - 4 < CARBON_MAX_FRAME for frame in frames)
    assert [point for chunk in unframe_all(frames) for point in chunk] == [
        (f"hpc.{path}", point) for path, point in long_paths
    ]


def test_an_empty_block_has_no_frames() -> None:
    assert carbon_frames(Block()) == [] and CarbonPickleEncoder("p").encode(Block()) == b""


def test_the_resend_window_written_again_reaches_a_restarted_carbon(tmp_path: Path) -> None:
    """Without a spool, the bytes written before carbon went away are written again, as they were, to the next
    carbon: a whisper file that carbon never made (its first instance is stopped before it can write) appears."""
    carbon = CarbonCache(tmp_path / "carbon").reserve_ports()
    sink = CarbonPickleSink("127.0.0.1", carbon.pickle_port, prefix="hpc", resend_window=600)
    now = int(time.time())

    async def scenario() -> None:
        task = asyncio.create_task(sink.run())
        with carbon:
            await asyncio.to_thread(wait_for, lambda: sink.connected, 30, "the sink connected")
            sink.submit(Block.of([(f"n.S.early{i}", (now, float(i))) for i in range(600)]))
            await asyncio.to_thread(wait_for, lambda: sink.stats()["sent"] == 600, 30, "600 datapoints written")
            await asyncio.to_thread(carbon.wait_for, "hpc.n.S.early599", timeout=30)
        for path in carbon.metric_paths():  # what the first carbon stored is gone: only the resend brings it back
            carbon.whisper_file(path).unlink()
        await asyncio.to_thread(wait_for, lambda: not sink.connected, 30, "the sink noticing carbon is gone")
        with carbon:
            points = await asyncio.to_thread(carbon.wait_for, "hpc.n.S.early599", timeout=30)
            assert points[-1] == (now, 599.0)
            await asyncio.to_thread(carbon.wait_for, "hpc.n.S.early0", timeout=30)
        await sink.close(timeout=1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    stats = sink.stats()
    assert stats["resent"] == 600 and stats["connects"] == 2 and stats["queued"] == 0
