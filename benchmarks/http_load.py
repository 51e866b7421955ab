"""Benchmark: lmaster's relay rate while its ``[http]`` API is busy.

The question is whether HTTP clients can slow the relay, since both share
lmaster's event loop. lmaster (pinned to the relay core, ``[http]`` on a
loopback port with a token) relays simulated agents (16 connections, as
the relay benchmark's "many" row) to a counting sink twice: alone, then
while one process on the load core holds 1,000 idle HTTP connections and
runs 50 clients that each GET ``/api/nodes`` once a second. Reported: both
relay rates, lmaster's CPU, the HTTP connections lmaster held, the pollers'
answers and their latency.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import psutil

from tests.support.carbon import free_ports

from .measure import LOAD_CPU, RELAY_CPU, VENV_BIN, Proc, can_connect, child_pythonpath, wait_until
from .relay import MANY, load
from .servers import lmaster_config
from .sink import CountingSink

IDLE_CONNECTIONS = 1000
POLLERS = 50


def start_lmaster_with_http(workdir: Path, sink: CountingSink) -> tuple[Proc, int, int, Path]:
    """lmaster as in the relay benchmark plus ``[http]``; returns it, its agent port, HTTP port and token file."""
    port, http_port = free_ports(2)
    config = lmaster_config(workdir, port, sink.pickle_port, sink.line_port)
    token_file = workdir / "http-token"
    token_file.write_text("benchmark-token-0123456789abcdef\n")
    token_file.chmod(0o600)
    with config.open("a") as stream:  # idle clients stay for the whole run; room for them and the pollers
        stream.write(
            f"\n[http]\nlisten = 127.0.0.1:{http_port}\ntoken file = {token_file}\n"
            f"max connections = {IDLE_CONNECTIONS + POLLERS + 100}\nrequest timeout = 600\nidle timeout = 600\n"
        )
    argv = [str(VENV_BIN / "lmaster"), "-c", str(config), "-p", str(workdir / "lmaster.pid"), "start", "--foreground"]
    proc = Proc("lmaster", argv, workdir / "lmaster.out", RELAY_CPU)
    proc.wait_ready(lambda: can_connect(port) and can_connect(http_port))
    return proc, port, http_port, token_file


def http_connections(pid: int, port: int) -> int:
    """Established connections lmaster holds on its HTTP port."""
    return sum(
        1 for connection in psutil.Process(pid).net_connections("tcp")
        if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_ESTABLISHED
    )  # fmt: skip


def run(workdir: Path, quick: bool) -> dict:
    window, warmup, quiet = (5.0, 2.0, 2.0) if quick else (15.0, 8.0, 5.0)
    workdir.mkdir(parents=True, exist_ok=True)
    with CountingSink() as sink:
        lmaster, port, http_port, token_file = start_lmaster_with_http(workdir, sink)
        try:
            print(f"  http: relay alone, {MANY} connections, {window:g} s …", flush=True)
            alone = load(sink, lmaster, port, "fructosa", MANY, window, warmup, quiet=quiet)
            out = workdir / "http-clients.json"
            argv = [sys.executable, "-m", "benchmarks.http_clients", str(http_port), str(token_file),
                    str(IDLE_CONNECTIONS), str(POLLERS), str(out)]  # fmt: skip
            clients = Proc("http-clients", argv, workdir / "http-clients.out", LOAD_CPU,
                           env={"PYTHONPATH": child_pythonpath()})  # fmt: skip
            try:
                if not wait_until(lambda: Path(f"{out}.ready").exists() or not clients.running, 60):
                    raise RuntimeError("the HTTP clients did not connect within 60 s")
                held = http_connections(lmaster.pid, http_port)
                print(f"  http: relay with {held} HTTP connections open, {POLLERS} polling /api/nodes …", flush=True)
                busy = load(sink, lmaster, port, "fructosa", MANY, window, warmup, quiet=quiet)
                held_after = http_connections(lmaster.pid, http_port)
            finally:
                clients.popen.send_signal(signal.SIGTERM)
                clients.popen.wait(30)
            polls = json.loads(out.read_text()) if out.exists() else {}
        finally:
            lmaster.stop()
    ratio = busy["rate"] / alone["rate"] if alone["rate"] else None
    return {
        "alone": alone, "with_http": busy, "http_connections": held, "http_connections_after": held_after,
        "clients": polls, "ratio": ratio,
        "targets": [{
            "target": "relay rate with 1,000 idle HTTP connections and 50 pollers ≥ 90 % of the rate alone",
            "measured": f"{100 * ratio:.0f} %" if ratio else "n/a", "pass": bool(ratio and ratio >= 0.9),
        }],
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip
