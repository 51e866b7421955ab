"""Live-stream clients for the ``stream`` benchmark: many WebSocket subscribers in one process.

    python -m benchmarks.stream_clients PORT TOKEN_FILE CLIENTS HOSTS OUT.json

Client ``i`` subscribes to ``bench{i % HOSTS}.Bench{i % 100}.*`` (the five
values of one simulated sensor: a dashboard watching one node's series) and
to ``probe.delay.*``, the stamped datapoints the benchmark sends to time the
way from lmaster's socket to a client. Writes ``OUT.json.ready`` once every
client is subscribed; SIGUSR1 and SIGUSR2 mark the start and end of the
measured window; SIGTERM writes the figures to ``OUT.json`` and ends.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import aiohttp

PROBE_PATTERN = "probe.delay.*"


class Tally:
    def __init__(self) -> None:
        self.datapoints = 0
        self.dropped = 0
        self.delays: list[float] = []
        self.marks: list[tuple[float, int]] = []
        self.measuring = False
        self.closed = 0


async def client(
    session: aiohttp.ClientSession, url: str, token: str, pattern: str, tally: Tally, subscribed: asyncio.Event
) -> None:
    async with session.ws_connect(url, headers={"Authorization": f"Bearer {token}"}, max_msg_size=1 << 24) as ws:
        await ws.send_json({"subscribe": [pattern, PROBE_PATTERN]})
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            arrived = time.time()
            data = json.loads(message.data)
            if "subscribed" in data:
                subscribed.set()
            for path, when, _ in data.get("datapoints", ()):
                if path.startswith("probe."):
                    if tally.measuring:
                        tally.delays.append(arrived - when)
                else:
                    tally.datapoints += 1
            tally.dropped += data.get("dropped", 0)
    tally.closed += 1


async def main(port: int, token_file: Path, clients: int, hosts: int, out: Path) -> None:
    token = token_file.read_text().strip()
    url = f"ws://127.0.0.1:{port}/api/stream"
    tally = Tally()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def mark() -> None:
        tally.measuring = not tally.marks
        tally.marks.append((time.monotonic(), tally.datapoints))

    loop.add_signal_handler(signal.SIGUSR1, mark)
    loop.add_signal_handler(signal.SIGUSR2, mark)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        for start in range(0, clients, 100):  # in steps, so the listen backlog never overflows
            events = []
            for number in range(start, min(clients, start + 100)):
                subscribed = asyncio.Event()
                pattern = f"bench{number % hosts}.Bench{number % 100}.*"
                tasks.append(asyncio.create_task(client(session, url, token, pattern, tally, subscribed)))
                events.append(subscribed)
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), 60)
        Path(f"{out}.ready").write_text("ready\n")
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    (start_time, start_count), (end_time, end_count) = (tally.marks + [(time.monotonic(), tally.datapoints)] * 2)[:2]
    delays = sorted(tally.delays)

    def quantile(q: float) -> float | None:
        return 1000 * delays[min(len(delays) - 1, int(q * len(delays)))] if delays else None

    out.write_text(json.dumps({
        "clients": clients, "delivered_per_second": (end_count - start_count) / max(1e-9, end_time - start_time),
        "dropped": tally.dropped, "closed_early": tally.closed, "probes": len(delays),
        "delay_p50_ms": quantile(0.5), "delay_p99_ms": quantile(0.99), "delay_max_ms": quantile(1.0),
    }))  # fmt: skip


if __name__ == "__main__":
    port, token_file, clients, hosts, out = sys.argv[1:6]
    asyncio.run(main(int(port), Path(token_file), int(clients), int(hosts), Path(out)))
