"""Benchmark 3: fan-in, one lmaster and 5,000 agents.

5,000 simulated agents (two sender processes of 2,500 asyncio connections
each, pinned to core 1 with the sink) connect to one lmaster (pinned to core
0; ``max connections`` raised above the default 4096 to let them in) and
each sends what lagent sends, one ``D`` frame (a datapoint block,
:mod:`fructosa.wire.blocks`) of 20 samples × 5 values every 10 s at its own
random phase: 500 frames, 10,000 samples and 50,000 datapoints a second.
``FRUCTOSA_FANIN_FRAMES=S`` makes them send pickled samples in ``S`` frames
instead (what a simple third-party sender sends). Every sample carries its
send time as its timestamp; lmaster passes the timestamp through, and the
sink records arrival − timestamp for one datapoint per sample (``….f0``):
the delay from the sample to the frame written to carbon, as the sink sees
it (its own scheduling on the shared core included).

After every agent is connected and a full 10-s round has passed, lmaster's
CPU % and RSS are taken over the window and the delays of that window are
summarised (p50, p99, max). The window must be quiet: other processes (not
this benchmark's) may use at most :data:`QUIET_PERCENT` of a core during it,
else it is measured again (the agents keep running), up to
:data:`WINDOWS` times; the row says how busy the others were and whether the
window counted as quiet.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import random
import signal
import struct
import subprocess
import time
from pathlib import Path

from fructosa.graphite_paths import sample_to_datapoints
from fructosa.wire import protocol
from fructosa.wire.blocks import Block

from .measure import (
    CLK_TCK,
    LOAD_CPU,
    VENV_BIN,
    CpuWindow,
    _process_tree,
    percentile,
    pin_self,
    rss_bytes,
    wait_for_idle,
    wait_until,
)
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
QUIET_PERCENT = 10.0
"""Others' CPU (% of one core) above which a window does not count as quiet."""
WINDOWS = 4
"""Windows measured at most while waiting for a quiet one."""
IDLE_WAIT_S = 60.0
"""Seconds to wait before each window for the other processes to go quiet."""
FRAME_KIND = os.environ.get("FRUCTOSA_FANIN_FRAMES", "D").upper()
"""``D`` (datapoint blocks, as lagent sends) or ``S`` (pickled samples)."""
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
        if FRAME_KIND == "S":
            writer.write(protocol.encode_samples(batch, session, sequence))
        else:  # what lagent sends: the samples flattened once, as one block
            datapoints = [dp for sample in batch for dp in sample_to_datapoints(sample)]
            body = protocol.batch_id(session, sequence) + Block.of(datapoints, samples=len(batch)).encode()
            writer.write(protocol.encode_frame(protocol.DATAPOINTS, body))
        counters[slot + _FRAMES] += 1
        next_at += INTERVAL
        if acks.done():
            acks.result()


def _sender_main(first: int, count: int, port: int, counters: list, slot: int) -> None:
    pin_self(LOAD_CPU)
    # These agents stand for 2,500 machines: a full collection of this process (all their
    # connections) between a sample's timestamp and its frame would show as lmaster's delay.
    # What they make per frame is freed by reference counting.
    gc.disable()

    async def main() -> None:
        gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
        tasks = [asyncio.ensure_future(_agent(first + i, port, counters, slot, gate)) for i in range(count)]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                counters[slot + _FAILED] += 1

    asyncio.run(main())


def run(workdir: Path, quick: bool, gc_probe: bool = False, py_spy: Path | None = None) -> dict:
    """The fan-in row and its targets. ``gc_probe``: lmaster runs under
    :mod:`benchmarks.gc_probe`, asked for a census of its cyclic garbage over
    the window; ``py_spy``: py-spy samples lmaster over the window, raw
    stacks written there."""
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
            for attempt in range(1, WINDOWS + 1):
                busy = wait_for_idle(IDLE_WAIT_S, threshold=QUIET_PERCENT / 2)
                if busy:
                    print(f"  fan-in: machine still busy (pid {busy[0][0]} at {busy[0][1]:.0f} %)", flush=True)
                if gc_probe:  # the GC probe's census of cyclic garbage starts (with a full collection: before)
                    os.kill(master.pid, signal.SIGUSR1)
                    time.sleep(2)
                sink.reset_delays()
                counted0, frames0 = sink.counted, total(_FRAMES)
                foreign = OthersWindow().start()
                cpu = CpuWindow(master.pid).start()
                user_system = user_system_seconds(master.pid)
                window_at = [time.time()]
                if py_spy is not None:
                    record_py_spy(master.pid, window, py_spy)
                else:
                    time.sleep(window)
                if gc_probe:
                    os.kill(master.pid, signal.SIGUSR2)  # … and ends
                window_at.append(time.time())
                ended = user_system_seconds(master.pid)
                user_system = [after - before for before, after in zip(user_system, ended, strict=True)]
                cpu.stop()
                foreign.stop()
                counted1, frames1 = sink.counted, total(_FRAMES)
                arrivals = sink.delays()
                quiet = foreign.percent <= QUIET_PERCENT
                print(f"  fan-in: window {attempt}: others used {foreign.percent:.0f} % of a core "
                      f"({'quiet' if quiet else 'NOT quiet'}; kernel {foreign.kernel_percent:.0f} %); "
                      f"lmaster {cpu.percent:.1f} %", flush=True)  # fmt: skip
                if quiet or py_spy is not None or gc_probe:
                    break
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
        "cpu_user_percent": 100.0 * user_system[0] / cpu.seconds,
        "cpu_system_percent": 100.0 * user_system[1] / cpu.seconds,
        "rss_mb": rss / 1e6,
        "delay_samples": len(delays),
        "delay_p50_ms": 1000 * percentile(delays, 0.50),
        "delay_p99_ms": 1000 * percentile(delays, 0.99),
        "delay_max_ms": 1000 * max(delays) if delays else float("nan"),
        "delay_over_target_percent": 100.0 * sum(d > P99_TARGET_MS / 1000 for d in delays) / max(1, len(delays)),
        "slow_seconds": slow_seconds(arrivals),
        "window_s": cpu.seconds,
        "window_at": window_at,
        "foreign_percent": foreign.percent,
        "kernel_percent": foreign.kernel_percent,
        "quiet": quiet,
        "windows": attempt,
        "frames": FRAME_KIND,
        "survived": alive,
    }
    return {"rows": [row], "targets": targets(row)}


def _process_seconds() -> dict[int, tuple[float, bool]]:
    """Every process's utime + stime (s), and whether it is a kernel thread (kthreadd's child)."""
    result = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stream:
                    fields = stream.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            result[int(entry)] = ((int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[1]) in (0, 2))
    return result


def _interrupt_seconds() -> float:
    with open("/proc/stat", encoding="ascii") as stream:
        fields = [int(value) for value in stream.readline().split()[1:]]
    return (fields[5] + fields[6]) / CLK_TCK


class OthersWindow:
    """CPU of the processes outside this benchmark during a window (% of one core), and
    apart from it the kernel's (its threads and interrupts: mostly the loopback traffic of
    the benchmark itself, 5,000 connections' frames, acknowledgements and carbon writes),
    which is no sign of a busy machine. A process that starts and ends within the window
    is missed."""

    def start(self) -> OthersWindow:
        self._started = (_process_seconds(), _interrupt_seconds(), time.monotonic())
        self.percent = self.kernel_percent = 0.0
        return self

    def stop(self) -> float:
        processes0, interrupts0, at0 = self._started
        processes, interrupts = _process_seconds(), _interrupt_seconds()
        seconds = time.monotonic() - at0
        ours = _process_tree(os.getpid())
        others = kernel = 0.0
        for pid, (used, kernel_thread) in processes.items():
            if pid in ours:
                continue
            spent = used - processes0.get(pid, (0.0, False))[0]
            if kernel_thread:
                kernel += spent
            else:
                others += spent
        self.percent = 100.0 * others / seconds
        self.kernel_percent = 100.0 * (kernel + interrupts - interrupts0) / seconds
        return self.percent


def user_system_seconds(pid: int) -> list[float]:
    """[utime, stime] of ``pid`` in seconds: how much of lmaster's CPU is the kernel's (sockets)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
        fields = stream.read().rsplit(")", 1)[1].split()
    return [int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK]


def record_py_spy(pid: int, seconds: float, raw_path: Path) -> None:
    """py-spy (raw stacks, 100 Hz, not stopping the process) on ``pid`` for ``seconds``, pinned to the load core."""
    command = [str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate",
               "100", "--format", "raw", "--nonblocking", "--output", str(raw_path)]  # fmt: skip
    subprocess.run(command, capture_output=True, timeout=seconds + 60, preexec_fn=lambda: pin_self(LOAD_CPU))


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
