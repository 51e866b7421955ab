"""HTTP load for the ``http`` benchmark: idle connections and pollers of ``/api/nodes``, in one process.

    python -m benchmarks.http_clients PORT TOKEN_FILE IDLE POLLERS OUT.json

Opens ``IDLE`` connections that send nothing (held open: a browser tab
left alone, a slow client), then ``POLLERS`` clients that each GET
``/api/nodes`` once a second on a keep-alive connection, timing every
answer. Writes ``OUT.json.ready`` once everything is connected and the
figures to ``OUT.json`` when terminated (SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

POLL_INTERVAL = 1.0


async def idle_connection(port: int, held: list[asyncio.StreamWriter], failures: list[str]) -> None:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        held.append(writer)
    except OSError as error:
        failures.append(str(error))


async def poller(port: int, token: str, latencies: list[float], statuses: dict[str, int], stop: asyncio.Event) -> None:
    request = (
        f"GET /api/nodes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Accept-Encoding: identity\r\n\r\n"
    ).encode()
    reader = writer = None
    while not stop.is_set():
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
        except (OSError, asyncio.IncompleteReadError, StopIteration, ValueError) as error:
            statuses[type(error).__name__] = statuses.get(type(error).__name__, 0) + 1
            if writer is not None:
                writer.close()
            reader = writer = None
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, POLL_INTERVAL - (time.perf_counter() - started)))
        except asyncio.TimeoutError:
            pass


async def main(port: int, token_file: Path, idle: int, pollers: int, out: Path) -> None:
    token = token_file.read_text().strip()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    held: list[asyncio.StreamWriter] = []
    failures: list[str] = []
    for start in range(0, idle, 100):  # in steps, so the listen backlog never overflows
        await asyncio.gather(*(idle_connection(port, held, failures) for _ in range(min(100, idle - start))))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    tasks = [asyncio.create_task(poller(port, token, latencies, statuses, stop)) for _ in range(pollers)]
    await asyncio.sleep(POLL_INTERVAL)
    Path(f"{out}.ready").write_text("ready\n")
    began = time.monotonic()
    await stop.wait()
    await asyncio.gather(*tasks)
    ordered = sorted(latencies)

    def quantile(q: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None

    out.write_text(json.dumps({
        "idle_opened": len(held), "idle_failed": len(failures), "pollers": pollers, "polls": len(latencies),
        "seconds": time.monotonic() - began, "statuses": statuses,
        "latency_p50_ms": 1000 * quantile(0.5) if ordered else None,
        "latency_p99_ms": 1000 * quantile(0.99) if ordered else None,
        "latency_max_ms": 1000 * ordered[-1] if ordered else None,
    }))  # fmt: skip
    for writer in held:
        writer.close()


if __name__ == "__main__":
    port, token_file, idle, pollers, out = sys.argv[1:6]
    asyncio.run(main(int(port), Path(token_file), int(idle), int(pollers), Path(out)))
