"""Benchmark 1: relay throughput and loss.

Simulated agents (agent protocol, 1 and 16 connections, lagent's window of
32 unacknowledged batches) → lmaster → counting sink; then the same
datapoints through Graphite's carbon-relay (pickle in → pickle out; its
defaults, and MAX_QUEUE_SIZE = 100000 with USE_FLOW_CONTROL = False) and
carbon-c-relay (plaintext; defaults and ``-q 2000000``).

Layout on the 2-core machine: the relay is pinned to core 0; the senders
and the sink share core 1 (their CPU is reported as "load core %", so a
saturated load side is visible). Rate = datapoints counted at the sink
during the window / window. Loss = datapoints fully written by the senders
− datapoints counted at the sink after the senders finished and the sink
drained (nothing new for 5 s, at most 30 s).

lmaster runs twice per connection count and frame kind: "D frames" are
what lagent sends (datapoints it flattened itself, :mod:`fructosa.wire.blocks`),
"S frames" what a simple third-party sender sends (pickled samples, which
lmaster unpickles through its restricted unpickler and flattens). The
1,000,000 datapoints/s target is on the D-frame rows.

lmaster paces its agents by acknowledgements, so its full-load rate is its
zero-loss rate. The peers' protocols have no such pacing: at full load they
take in far more than they forward and drop the rest, so for each peer the
benchmark also searches its highest zero-loss rate (paced senders, geometric
bisection, see :func:`sustained`); the ratios use that figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .measure import CpuWindow, ForeignWindow, Proc, rss_bytes, settle
from .senders import AGENT_KINDS, Senders, SenderSpec
from .servers import not_installed, start_c_relay, start_carbon_relay, start_lmaster
from .sink import CountingSink

MANY = 16
"""Connections of the "many" runs; 16 × 32 batches × 500 datapoints in flight
stays below lmaster's memory queue (1,000,000), so nothing goes to its spool."""

Starter = Callable[[Path, CountingSink], tuple[Proc, int]]


def sender_specs(kind: str, port: int, connections: int, rate: float = 0.0) -> list[SenderSpec]:
    """One process for one connection, else two processes sharing the
    connections (and the offered ``rate``, 0 meaning as fast as possible)."""
    processes = 1 if connections == 1 else 2
    specs, first = [], 0
    for index in range(processes):
        count = connections // processes + (1 if index < connections % processes else 0)
        specs.append(SenderSpec(kind, port, first, count, rate=rate * count / connections))
        first += count
    return specs


def load(
    sink: CountingSink, relay: Proc, port: int, kind: str, connections: int, window: float, warmup: float,
    rate: float = 0.0, quiet: float = 5.0,
) -> dict:  # fmt: skip
    """Senders against a running relay for ``warmup`` + ``window`` seconds, then
    drain: rate, loss, the relay's CPU % and RSS over the window."""
    settle()
    counted_before = sink.counted
    senders = Senders(sender_specs(kind, port, connections, rate))
    try:
        senders.wait_ready()
        senders.start()
        time.sleep(warmup)
        counted0, sent0 = sink.counted, senders.sent
        foreign = ForeignWindow().start()
        cpu = CpuWindow(relay.pid).start()
        load_windows = [CpuWindow(pid).start() for pid in [*senders.pids, sink.process.pid]]
        time.sleep(window)
        cpu.stop()
        counted1, sent1 = sink.counted, senders.sent
        rss = rss_bytes(relay.pid)
        load_percent = sum(w.stop() for w in load_windows)
        foreign.stop()
        senders.finish()
        sent, acked = senders.sent, senders.acked
    finally:
        senders.terminate()
    drain = sink.wait_drained(counted_before + sent, quiet=quiet, timeout=30.0)
    delivered = sink.counted - counted_before
    loss = sent - delivered
    return {
        "rate": (counted1 - counted0) / cpu.seconds,
        "offered": (sent1 - sent0) / cpu.seconds,
        "sent": sent,
        "acked": acked if kind in AGENT_KINDS else None,
        "delivered": delivered,
        "loss": loss,
        "loss_percent": 100.0 * loss / sent if sent else 0.0,
        "cpu_percent": cpu.percent,
        "rss_mb": rss / 1e6,
        "load_core_percent": load_percent,
        "foreign_percent": foreign.percent,
        "window_s": cpu.seconds,
        "drain_s": drain,
        "survived": relay.running,
    }


def measure(
    label: str, start: Starter, kind: str, connections: int, window: float, warmup: float, workdir: Path,
    quiet: float = 5.0,
) -> dict:  # fmt: skip
    """One relay under as much load as it takes (the agent protocol paces
    itself by acknowledgements; the peers' protocols by TCP alone)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with CountingSink() as sink:
        relay, port = start(workdir, sink)
        try:
            result = load(sink, relay, port, kind, connections, window, warmup, quiet=quiet)
            return {"relay": label, "connections": connections, **result}
        finally:
            relay.stop()


def sustained(
    start: Starter, kind: str, connections: int, overload: dict, probes: int, window: float, workdir: Path,
    quiet: float = 3.0,
) -> dict:  # fmt: skip
    """The highest offered rate a peer delivers with zero loss: geometric
    bisection between what it delivered under overload and what it took in.
    A probe passes when nothing is lost, the senders achieved ≥ 95 % of the
    rate (flow control may slow them instead of dropping) and the sink got
    ≥ 95 % of it during the window (a queue filling up is not sustained)."""
    low, high = max(overload["rate"], 1000.0), max(overload["offered"], overload["rate"] * 2, 2000.0)
    tried: list[dict] = []
    best: dict | None = None
    workdir.mkdir(parents=True, exist_ok=True)
    with CountingSink() as sink:
        relay, port = start(workdir, sink)
        try:
            rate = low
            for _ in range(probes):
                result = load(sink, relay, port, kind, connections, window, 1.0, rate=rate, quiet=quiet)
                passed = (
                    result["loss"] == 0
                    and result["offered"] >= 0.95 * rate
                    and result["rate"] >= 0.95 * result["offered"]
                    and result["survived"]
                )
                tried.append({"offered_target": rate, "passed": passed, **result})
                if passed:
                    low = rate
                    if best is None or result["rate"] > best["rate"]:
                        best = result
                else:
                    high = rate
                    if best is None:
                        low = rate / 2
                if best is None:
                    rate = low
                elif high / low < 1.1:
                    break
                else:
                    rate = (low * high) ** 0.5
        finally:
            relay.stop()
    return {"rate": best["rate"] if best else None, "cpu_percent": best["cpu_percent"] if best else None,
            "rss_mb": best["rss_mb"] if best else None, "probes": tried}  # fmt: skip


def _lmaster(workdir: Path, sink: CountingSink) -> tuple[Proc, int]:
    return start_lmaster(workdir, sink.pickle_port, sink.line_port)


LMASTER_D = "lmaster, D frames (lagent)"
LMASTER_S = "lmaster, S frames (simple senders)"


def run_lmaster(workdir: Path, quick: bool) -> dict:
    """lmaster's rows only (``run.py --only lmaster``): a short run for before/after comparisons."""
    return run(workdir, quick, peers=False)


def run(workdir: Path, quick: bool, peers: bool = True) -> dict:
    # lmaster's memory grows for its first ~5 s of full load (the resend window
    # of 5 s fills); the full run's warm-up covers that, the quick one does not.
    window, warmup, quiet = (3.0, 1.0, 2.0) if quick else (15.0, 8.0, 5.0)
    probes, probe_window, probe_quiet = (0, 0.0, 0.0) if quick else (6, 8.0, 3.0)  # quick: no search
    cases: list[tuple[str, str | None, Starter, str, int]] = [
        (LMASTER_D, None, _lmaster, "fructosa", 1),
        (LMASTER_D, None, _lmaster, "fructosa", MANY),
        (LMASTER_S, None, _lmaster, "samples", 1),
        (LMASTER_S, None, _lmaster, "samples", MANY),
    ]
    cases += [] if not peers else [
        ("carbon-relay (defaults)", "carbon-relay.py",
         lambda w, s: start_carbon_relay(w, s.pickle_port, tuned=False), "pickle", MANY),
        ("carbon-relay (queue 100000, no flow control)", "carbon-relay.py",
         lambda w, s: start_carbon_relay(w, s.pickle_port, tuned=True), "pickle", MANY),
        ("carbon-c-relay (defaults)", "carbon-c-relay",
         lambda w, s: start_c_relay(w, s.line_port, queue=None), "line", MANY),
        ("carbon-c-relay (-q 2000000)", "carbon-c-relay",
         lambda w, s: start_c_relay(w, s.line_port, queue=2_000_000), "line", MANY),
    ]  # fmt: skip
    rows = []
    for index, (label, program, start, kind, connections) in enumerate(cases):
        skipped = not_installed(program) if program else None
        if skipped:
            rows.append({"relay": label, "connections": connections, "skipped": skipped})
            continue
        print(f"  relay: {label}, {connections} connection(s), {window:g} s at full load …", flush=True)
        try:
            row = measure(label, start, kind, connections, window, warmup, workdir / f"relay-{index}", quiet)
            if kind in AGENT_KINDS:
                row["sustained"] = row["rate"] if row["loss"] <= 0 else None  # paced by acknowledgements
            elif not probes:
                row["sustained"] = None  # --quick: too short to search a zero-loss rate
            else:
                print(f"  relay: {label}: searching the highest zero-loss rate …", flush=True)
                row["search"] = sustained(start, kind, connections, row, probes, probe_window,
                                          workdir / f"relay-{index}-search", probe_quiet)  # fmt: skip
                row["sustained"] = row["search"]["rate"]
            rows.append(row)
        except Exception as error:  # one broken peer must not lose the other figures
            rows.append({"relay": label, "connections": connections, "skipped": f"failed: {error}"})
    return {"rows": rows, "ratios": ratios(rows), "targets": targets(rows)}


def _best(rows: list[dict], prefix: str, key: str, connections: int | None = None) -> float | None:
    values = [
        row[key]
        for row in rows
        if row["relay"].startswith(prefix) and row.get(key) and connections in (None, row["connections"])
    ]
    return max(values) if values else None


def ratios(rows: list[dict]) -> list[dict]:
    """lmaster (16 connections, zero loss) against every peer row: against the
    peer's highest zero-loss rate, and against what it delivered under overload."""
    ours = _best(rows, LMASTER_D, "sustained", MANY)
    result = []
    for row in rows:
        if row["relay"].startswith("lmaster") or "rate" not in row or ours is None:
            continue
        result.append({
            "versus": row["relay"],
            "sustained": ours / row["sustained"] if row.get("sustained") else None,
            "overload": ours / row["rate"] if row["rate"] else None,
        })  # fmt: skip
    return result


def targets(rows: list[dict]) -> list[dict]:
    one, ours = _best(rows, LMASTER_D, "sustained", 1), _best(rows, LMASTER_D, "sustained", MANY)
    carbon_relay = _best(rows, "carbon-relay", "sustained")
    c_relay = _best(rows, "carbon-c-relay (-q", "sustained")
    result = [
        {
            "target": f"relay ≥ 1,000,000 datapoints/s on one core, zero loss, D frames, {connections} connection(s)",
            "measured": f"{best:,.0f} dp/s" if best is not None else "lost data (or not measured)",
            "pass": best is not None and best >= 1_000_000,
        }
        for connections, best in ((1, one), (MANY, ours))
    ]
    if ours is not None and carbon_relay:
        result.append({"target": "≥ 8× carbon-relay (its best zero-loss rate)",
                       "measured": f"{ours / carbon_relay:.2f}×", "pass": ours / carbon_relay >= 8})  # fmt: skip
    if ours is not None and c_relay:
        result.append({"target": "≥ 2.5× carbon-c-relay -q 2000000 (zero-loss rate)",
                       "measured": f"{ours / c_relay:.2f}×", "pass": ours / c_relay >= 2.5})  # fmt: skip
    return result
