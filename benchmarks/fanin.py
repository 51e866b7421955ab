"""Benchmark 3: fan-in, one lmaster and 5,000 agents.

5,000 simulated agents (two sender processes of 2,500 asyncio connections
each, pinned to core 1 with the sink) connect to one lmaster (pinned to core
0; ``max connections`` raised above the default 4096 to let them in) and
each sends one ``S`` frame of 20 samples × 5 values every 10 s at its own
random phase: 500 frames, 10,000 samples and 50,000 datapoints a second.
Every sample carries its send time as its timestamp; lmaster passes the
timestamp through, and the sink records arrival − timestamp for one datapoint
per sample (``….f0``): the delay from the sample to the frame written to
carbon, as the sink sees it (its own scheduling on the shared core included).

After every agent is connected and a full 10-s round has passed, lmaster's
CPU % and RSS are taken over the window and the delays of that window are
summarised (p50, p99, max).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import struct
import time
from pathlib import Path

from fructosa.graphite_paths import sample_to_datapoints
from fructosa.wire import protocol
from fructosa.wire.blocks import Block

from .measure import LOAD_CPU, CpuWindow, ForeignWindow, percentile, pin_self, rss_bytes, wait_until
from .servers import start_lmaster
from .sink import CountingSink

AGENTS = 5000
SENSORS = 20
VALUES = 5
VALUE_KEYS = range(VALUES)
INTERVAL = 10.0
PROCESSES = 2
CONNECTING_AT_ONCE = 64
CPU_TARGET, RSS_TARGET_MB, P99_TARGET_MS = 20.0, 300.0, 50.0
_CONNECTED, _FRAMES, _ACKS, _FAILED = range(4)


async def _read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    (length,) = struct.unpack("!I", await reader.readexactly(4))
    body = await reader.readexactly(length)
    return body[:1], body[1:]


async def _agent(number: int, port: int, counters: list, slot: int, gate: asyncio.Semaphore) -> None:
    """One simulated agent: handshake, then a frame of 20 samples every 10 s."""
    host = f"fan{number}"
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        kind, _ = await _read_frame(reader)
        assert kind == protocol.CHALLENGE
        hello = {"protocol": "fructosa", "version": 1, "host": host, "agent": "fanin-bench",
                 "nonce": os.urandom(16).hex(), "heartbeat": 30}  # fmt: skip
        writer.write(protocol.encode_json(protocol.HELLO, hello))
        kind, _ = await _read_frame(reader)
        assert kind == protocol.WELCOME
    counters[slot + _CONNECTED] += 1

    async def read_acks() -> None:
        while True:
            kind, payload = await _read_frame(reader)
            if kind == protocol.ACK:
                counters[slot + _ACKS] += len(payload) // protocol.BATCH_ID_SIZE

    acks = asyncio.ensure_future(read_acks())
    loop = asyncio.get_running_loop()
    session = os.urandom(16)
    next_at = loop.time() + random.uniform(0, INTERVAL)
    sequence = 0
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        sequence += 1
        now = time.time()
        batch = [
            {
                "host": host,
                "sensor": f"Sensor{k}",
                "time": now,
                "value": {f"f{j}": 100.0 + k + j for j in range(VALUES)},
            }
            for k in range(SENSORS)
        ]
        datapoints = [dp for sample in batch for dp in sample_to_datapoints(sample)]
        body = protocol.batch_id(session, sequence) + Block.of(datapoints, samples=len(batch)).encode()
        writer.write(protocol.encode_frame(protocol.DATAPOINTS, body))  # what lagent sends
        counters[slot + _FRAMES] += 1
        next_at += INTERVAL
        if acks.done():
            acks.result()


def _sender_main(first: int, count: int, port: int, counters: list, slot: int) -> None:
    pin_self(LOAD_CPU)

    async def main() -> None:
        gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
        tasks = [asyncio.ensure_future(_agent(first + i, port, counters, slot, gate)) for i in range(count)]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                counters[slot + _FAILED] += 1

    asyncio.run(main())


def run(workdir: Path, quick: bool, gc_probe: bool = False) -> dict:
    window = 10.0 if quick else 60.0
    workdir.mkdir(parents=True, exist_ok=True)
    counters = multiprocessing.RawArray("d", 4 * PROCESSES)
    processes: list[multiprocessing.Process] = []
    with CountingSink(delay_suffix=".f0") as sink:
        master, port = start_lmaster(
            workdir, sink.pickle_port, sink.line_port, max_connections=AGENTS + 100, gc_probe=gc_probe
        )
        try:
            per_process = AGENTS // PROCESSES
            for index in range(PROCESSES):
                process = multiprocessing.Process(
                    target=_sender_main, args=(index * per_process, per_process, port, counters, index * 4),
                    daemon=True, name=f"fanin-{index}",
                )  # fmt: skip
                process.start()
                processes.append(process)

            def total(field: int) -> int:
                return int(sum(counters[index * 4 + field] for index in range(PROCESSES)))

            print(f"  fan-in: connecting {AGENTS} agents …", flush=True)
            began = time.monotonic()
            connected = wait_until(lambda: total(_CONNECTED) >= AGENTS or total(_FAILED) > 0, 120.0, poll=0.2)
            connect_s = time.monotonic() - began
            if not connected or total(_FAILED):
                raise RuntimeError(f"only {total(_CONNECTED)} of {AGENTS} agents connected: {master.tail()}")
            time.sleep(INTERVAL + 1)  # every agent has sent once: steady state
            print(f"  fan-in: {AGENTS} agents connected in {connect_s:.1f} s; measuring {window:g} s …", flush=True)
            sink.reset_delays()
            counted0, frames0 = sink.counted, total(_FRAMES)
            foreign = ForeignWindow().start()
            cpu = CpuWindow(master.pid).start()
            time.sleep(window)
            cpu.stop()
            foreign.stop()
            counted1, frames1 = sink.counted, total(_FRAMES)
            arrivals = sink.delays()
            rss = rss_bytes(master.pid)
            alive = master.running
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()  # our own children, by PID
                    process.join(5)
            master.stop()
    delays = [delay for _, delay in arrivals]
    row = {
        "agents": AGENTS,
        "connect_s": connect_s,
        "frames_per_s": (frames1 - frames0) / cpu.seconds,
        "datapoints_per_s": (counted1 - counted0) / cpu.seconds,
        "cpu_percent": cpu.percent,
        "rss_mb": rss / 1e6,
        "delay_samples": len(delays),
        "delay_p50_ms": 1000 * percentile(delays, 0.50),
        "delay_p99_ms": 1000 * percentile(delays, 0.99),
        "delay_max_ms": 1000 * max(delays) if delays else float("nan"),
        "delay_over_target_percent": 100.0 * sum(d > P99_TARGET_MS / 1000 for d in delays) / max(1, len(delays)),
        "slow_seconds": slow_seconds(arrivals),
        "window_s": cpu.seconds,
        "foreign_percent": foreign.percent,
        "survived": alive,
    }
    return {"rows": [row], "targets": targets(row)}


def slow_seconds(arrivals: list[tuple[float, float]]) -> list[dict]:
    """Per second of arrival that held a delay over the target: when (seconds
    into the window), how many datapoints were late and the worst delay; shows
    whether late frames are spread out or come in periodic stalls."""
    if not arrivals:
        return []
    start = arrivals[0][0]
    seconds: dict[int, list[float]] = {}
    for arrival, delay in arrivals:
        if delay > P99_TARGET_MS / 1000:
            seconds.setdefault(int(arrival - start), []).append(delay)
    return [
        {"second": second, "late": len(late), "worst_ms": round(1000 * max(late), 1)}
        for second, late in sorted(seconds.items())
    ]


def targets(row: dict) -> list[dict]:
    return [
        {"target": f"fan-in {AGENTS:,} agents ≤ {CPU_TARGET:g} % of a core", "measured": f"{row['cpu_percent']:.1f} %",
         "pass": row["cpu_percent"] <= CPU_TARGET},
        {"target": f"fan-in ≤ {RSS_TARGET_MB:g} MB RSS", "measured": f"{row['rss_mb']:.0f} MB",
         "pass": row["rss_mb"] <= RSS_TARGET_MB},
        {"target": f"fan-in p99 delay ≤ {P99_TARGET_MS:g} ms", "measured": f"{row['delay_p99_ms']:.1f} ms",
         "pass": row["delay_p99_ms"] <= P99_TARGET_MS},
    ]  # fmt: skip
