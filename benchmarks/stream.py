"""Benchmark: lmaster's live stream with 1,000 subscribed WebSocket clients while agents send 50,000 dp/s.

lmaster (pinned to the relay core, ``[http]`` with a token) relays
simulated agents (16 connections, paced to 50,000 datapoints/s in all) to
a counting sink, first without stream clients, then while one process on
the load core holds 1,000 WebSocket clients, each subscribed to one
simulated sensor of one node (five values: a dashboard watching a series)
and to a probe series. A probe agent in this process sends one datapoint
stamped with its sending time every 0.5 s; every client times its arrival,
so the delay is the whole way through lmaster to 1,000 sockets and a busy
client process; one more client, alone in this process and subscribed to
the probe only, times what lmaster itself adds (its turn among the 1,000
sends on its loop) without the client process's backlog. Reported: datapoints/s delivered to the clients, lmaster's
CPU with and without them, the relay rates, and the probe's delay (p50,
p99, max). On a shared machine the rates and delays move with other
processes' load.
"""

from __future__ import annotations

import asyncio
import json
import select
import signal
import sys
import threading
import time
from pathlib import Path

import aiohttp

from tests.support.carbon import free_ports
from tests.support.peer import Peer

from .measure import LOAD_CPU, RELAY_CPU, VENV_BIN, Proc, can_connect, child_pythonpath, wait_until
from .relay import MANY, load
from .servers import lmaster_config
from .sink import CountingSink

CLIENTS = 1000
RATE = 50_000
"""Datapoints/s the simulated agents offer in all."""
PROBE_INTERVAL = 0.5
"""Seconds between two probe datapoints: each goes to all 1,000 clients, whose process shares the load core."""


def start_lmaster(workdir: Path, sink: CountingSink) -> tuple[Proc, int, int, Path]:
    """lmaster as in the relay benchmark plus ``[http]`` with room for the clients; it, its ports, the token file."""
    port, http_port = free_ports(2)
    config = lmaster_config(workdir, port, sink.pickle_port, sink.line_port)
    token_file = workdir / "http-token"
    token_file.write_text("benchmark-token-0123456789abcdef\n")
    token_file.chmod(0o600)
    with config.open("a") as stream:
        stream.write(
            f"\n[http]\nlisten = 127.0.0.1:{http_port}\ntoken file = {token_file}\n"
            f"max connections = {CLIENTS + 100}\nmax stream clients = {CLIENTS + 10}\n"
            "request timeout = 600\nidle timeout = 600\n"
        )
    argv = [str(VENV_BIN / "lmaster"), "-c", str(config), "-p", str(workdir / "lmaster.pid"), "start", "--foreground"]
    proc = Proc("lmaster", argv, workdir / "lmaster.out", RELAY_CPU)
    proc.wait_ready(lambda: can_connect(port) and can_connect(http_port))
    return proc, port, http_port, token_file


def probe(port: int, stop: threading.Event) -> None:
    """One datapoint stamped now every PROBE_INTERVAL, as an agent ``probe``; acknowledgements read and dropped."""
    peer = Peer(port, host="probe")
    try:
        while not stop.wait(PROBE_INTERVAL):
            peer.send_datapoints([("probe.delay.now", (time.time(), 0.0))])
            while select.select([peer.sock], [], [], 0)[0]:
                if not peer.sock.recv(65536):
                    return
    finally:
        peer.close()


def lone_client(http_port: int, token: str, stop: threading.Event, delays: list[float]) -> None:
    """A client subscribed to the probe only, in a thread of this process: lmaster's part of the delay."""

    async def watch() -> None:
        url = f"ws://127.0.0.1:{http_port}/api/stream"
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, headers={"Authorization": f"Bearer {token}"}) as ws:
                await ws.send_json({"subscribe": ["probe.delay.*"]})
                while not stop.is_set():
                    try:
                        message = await ws.receive(timeout=0.5)
                    except asyncio.TimeoutError:
                        continue
                    if message.type != aiohttp.WSMsgType.TEXT:
                        return
                    arrived = time.time()
                    delays.extend(arrived - when for _, when, _ in json.loads(message.data).get("datapoints", ()))

    asyncio.run(watch())


def quantiles(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {f"delay_{name}_ms": 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]
            for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))} | {"probes": len(ordered)}  # fmt: skip


def run(workdir: Path, quick: bool) -> dict:
    window, warmup, quiet = (5.0, 2.0, 2.0) if quick else (15.0, 5.0, 5.0)
    workdir.mkdir(parents=True, exist_ok=True)
    with CountingSink() as sink:
        lmaster, port, http_port, token_file = start_lmaster(workdir, sink)
        stop = threading.Event()
        prober = threading.Thread(target=probe, args=(port, stop), daemon=True)
        lone_delays: list[float] = []
        token = token_file.read_text().strip()
        lone = threading.Thread(target=lone_client, args=(http_port, token, stop, lone_delays), daemon=True)
        try:
            print(f"  stream: relay at {RATE} dp/s, no stream clients, {window:g} s …", flush=True)
            alone = load(sink, lmaster, port, "fructosa", MANY, window, warmup, rate=RATE, quiet=quiet)
            out = workdir / "stream-clients.json"
            argv = [sys.executable, "-m", "benchmarks.stream_clients", str(http_port), str(token_file),
                    str(CLIENTS), str(MANY), str(out)]  # fmt: skip
            clients = Proc("stream-clients", argv, workdir / "stream-clients.out", LOAD_CPU,
                           env={"PYTHONPATH": child_pythonpath()})  # fmt: skip
            try:
                if not wait_until(lambda: Path(f"{out}.ready").exists() or not clients.running, 120):
                    raise RuntimeError("the stream clients did not subscribe within 120 s")
                if not clients.running:
                    raise RuntimeError(f"the stream clients failed:\n{clients.tail()}")
                lone.start()
                prober.start()
                print(f"  stream: relay at {RATE} dp/s with {CLIENTS} subscribed clients, {window:g} s …", flush=True)
                marks = threading.Timer(warmup, clients.popen.send_signal, (signal.SIGUSR1,))
                marks.start()
                busy = load(sink, lmaster, port, "fructosa", MANY, window, warmup, rate=RATE, quiet=quiet)
                clients.popen.send_signal(signal.SIGUSR2)
                lone_figures = quantiles(lone_delays)
            finally:
                stop.set()
                clients.popen.send_signal(signal.SIGTERM)
                clients.popen.wait(60)
            figures = json.loads(out.read_text()) if out.exists() else {}
        finally:
            lmaster.stop()
    return {"alone": alone, "with_clients": busy, "clients": figures, "lone_client": lone_figures,
            "rate_offered": RATE, "nodes": MANY}  # fmt: skip
