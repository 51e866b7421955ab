"""FrUCToSA benchmarks (issue 7): one command, a table on stdout, JSON on disk.

    .venv/bin/python benchmarks/run.py [--quick] [--only relay,idle,agent,fanin,e2e,dashboards,profile] [--json OUT]

``relay``, ``idle`` (the relay plain and with ``[http]``, stream and alarms
configured but no client), ``agent``, ``fanin``, ``e2e`` and ``dashboards``
run by default (``--quick`` shortens every window for a smoke run);
``profile`` (py-spy and GC pauses of lmaster), ``lmaster`` (the relay
benchmark's lmaster rows alone, D and S frames), ``http`` and ``stream`` run
only when named. See
benchmarks/README.md for what each measures and how.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `benchmarks` and `tests` importable; appended,
    sys.path.append(str(REPO))  # so that a snapshot on PYTHONPATH (--commit) provides `fructosa`

from benchmarks import (  # noqa: E402
    agent_overhead,
    dashboards,
    end_to_end,
    fanin,
    http_load,
    lmaster_profile,
    relay,
    stream,
)
from benchmarks.measure import IDLE_WAIT, SNAPSHOT_VARIABLE, machine, wait_for_idle  # noqa: E402
from benchmarks.side_by_side import round_ratio  # noqa: E402

BENCHMARKS: dict[str, Callable[[Path, bool], dict]] = {
    "relay": relay.run,
    "lmaster": relay.run_lmaster,
    "idle": http_load.run_idle,
    "agent": agent_overhead.run,
    "fanin": fanin.run,
    "e2e": end_to_end.run,
    "profile": lmaster_profile.run,
    "http": http_load.run,
    "stream": stream.run,
    "dashboards": dashboards.run,
}
DEFAULT = ("relay", "idle", "agent", "fanin", "e2e", "dashboards")
TARGETED = ("relay", "lmaster", "idle", "agent", "fanin", "http", "e2e", "dashboards")
"""The benchmarks that judge their figures against the targets (a ``targets`` list)."""


def number(value: object, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) if rows else len(headers[i])
              for i in range(len(headers))]  # fmt: skip
    lines = [
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


def show_relay(result: dict) -> str:
    rows = []
    for row in result["rows"]:
        if "skipped" in row:
            rows.append([row["relay"], str(row["connections"]), row["skipped"], *[""] * 9])
            continue
        rows.append([
            row["relay"], str(row["connections"]), number(row["rate"]), number(row.get("sustained")),
            number(row["offered"]), number(row["sent"]), number(row["delivered"]), number(row["loss_percent"], 2),
            number(row["cpu_percent"]), number(row["rss_mb"]), number(row["load_core_percent"]),
            number(row.get("foreign_percent")),
        ])  # fmt: skip
    text = table(["relay", "conns", "delivered dp/s", "zero-loss dp/s", "offered dp/s", "sent", "delivered",
                  "loss %", "CPU %", "RSS MB", "load core %", "others %"], rows)  # fmt: skip
    lines = [
        text,
        "",
        "  delivered dp/s: at full load (lmaster is paced by its acknowledgements, the peers by TCP only);",
        "  zero-loss dp/s: lmaster's full-load rate if it lost nothing; a peer's highest paced rate without loss.",
        "  D frames: datapoint blocks, as lagent sends them; S frames: pickled samples, as simple senders send them.",
    ]
    if result["ratios"]:
        lines += ["", "  lmaster (D frames, 16 connections) relative to:"]
    for ratio in result["ratios"]:
        lines.append(f"    {ratio['versus']:<46} {number(ratio['sustained'], 2)}× zero-loss rate, "
                     f"{number(ratio['overload'], 2)}× full-load delivered")  # fmt: skip
    return "\n".join(lines)


def show_agent(result: dict) -> str:
    rows = []
    for row in result["rows"]:
        if "skipped" in row:
            rows.append([row["agent"], row["skipped"], "", "", "", "", "", ""])
            continue
        rows.append([row["agent"], number(row["cpu_percent_schedstat"], 3), number(row["cpu_percent"], 3),
                     number(row["rss_mb"], 1), number(row.get("wakeups_per_s"), 2), number(row.get("threads")),
                     number(row["datapoints_per_s"], 1), number(row.get("foreign_percent"))])  # fmt: skip
    lines = [
        table(
            [
                "agent (1 s sensors)",
                "CPU % (schedstat)",
                "CPU % (utime+stime)",
                "RSS MB",
                "wakeups/s",
                "threads",
                "datapoints/s",
                "others %",
            ],
            rows,
        )  # fmt: skip
    ]
    records = result.get("rounds", [])
    if records:
        lines.append(f"  lagent, collectd and the loop: side by side at once on core 0, {len(records)} rounds; each "
                     "figure the median of the rounds (shipped conf: alone, one window)")  # fmt: skip
        labels = sorted(records[0]["agents"], key=lambda label: (label != "lagent", label))  # lagent first, always
        per_round = [
            [str(record["round"]), ", ".join(record["start_order"]),
             " / ".join(f"{record['phase_ms'][label]:.0f}" for label in labels),
             f"{record['closest_ms']:.0f} / {record['closest_ms_after']:.0f}", str(record["restarts"]),
             *(f"{record['agents'][label]['cpu_percent_schedstat']:.3f} ({record['agents'][label]['cpu_percent']:.3f})"
               for label in labels),
             *(number(round_ratio(record, "lagent", ratio["versus"]), 2) for ratio in result["ratios"]),
             number(record["foreign_percent"], 1)]
            for record in records
        ]  # fmt: skip
        lines += ["", table(["round", "start order", f"phase ms ({' / '.join(labels)})", "closest ms (before / after)",
                             "restarts", *(f"{label} CPU % (ticks)" for label in labels),
                             *(f"lagent / {ratio['versus']}" for ratio in result["ratios"]), "others %"],
                            per_round), ""]  # fmt: skip
    for ratio in result["ratios"]:
        rounds = ", ".join(f"{value:.2f}" for value in ratio.get("cpu_rounds", []))
        lines.append(f"  lagent / {ratio['versus']}: CPU {number(ratio['cpu'], 2)}× (schedstat, median of rounds "
                     f"{rounds}; utime+stime {number(ratio.get('cpu_ticks'), 2)}×), "
                     f"RSS {number(ratio['rss'], 2)}×")  # fmt: skip
    kinds = result.get("install_kinds")
    if kinds:
        lines += [
            f"  lagent, the psutil loop and the shipped conf run from a regular install ({kinds['installed']}) in a "
            "venv of their own, as after `pip install .`;",
            f"  lagent's VmRSS at {number(kinds['probe_age_s'])} s: regular install "
            f"{number(kinds['lagent_installed_mb'], 1)} MB, developer's editable venv "
            f"{number(kinds['lagent_developer_venv_mb'], 1)} MB (bare `python -c pass`: "
            f"{number(kinds['bare_python_installed_mb'], 1)} vs "
            f"{number(kinds['bare_python_developer_venv_mb'], 1)} MB)",
        ]
    return "\n".join(lines)


def show_fanin(result: dict) -> str:
    row = result["rows"][0]
    quiet = {True: "yes", False: "NO", None: "-"}[row.get("quiet")]
    return table(
        ["agents", "frames", "frames/s", "datapoints/s", "CPU %", "user/sys %", "RSS MB", "delay p50 ms", "p99 ms",
         "max ms", "> 50 ms %", "others %", "kernel %", "quiet", "windows"],
        [[number(row["agents"]), row.get("frames", "D"), number(row["frames_per_s"]), number(row["datapoints_per_s"]),
          number(row["cpu_percent"], 1),
          f"{number(row.get('cpu_user_percent'), 1)}/{number(row.get('cpu_system_percent'), 1)}",
          number(row["rss_mb"]), number(row["delay_p50_ms"], 1),
          number(row["delay_p99_ms"], 1), number(row["delay_max_ms"], 1), number(row["delay_over_target_percent"], 1),
          number(row.get("foreign_percent")), number(row.get("kernel_percent")), quiet, number(row.get("windows"))]],
    )  # fmt: skip


def show_e2e(result: dict) -> str:
    def each(values: list, digits: int = 0) -> str:
        return " + ".join(number(value, digits) for value in values)

    rows = [
        [row["configuration"], number(row["landed_per_s_overall"]), number(row["lmaster_to_carbon_per_s"]),
         number(row["carbon_received_per_s"]),
         number(row["whisper_committed_per_s"]), number(row["lmaster_cpu_percent"]), each(row["carbon_cpu_percent"]),
         number(row["senders_cpu_percent"]), number(row["lmaster_rss_mb"]), each(row["carbon_rss_mb"]),
         number(row["sent"]), number(row["landed"]), number(row["lost"]), each(row["share_percent"], 1),
         number(row["drain_s"], 1), number(row.get("foreign_percent"))]
        for row in result["rows"]
    ]  # fmt: skip
    text = table(
        ["configuration", "stored dp/s (run)", "lmaster→carbon dp/s", "carbon received dp/s", "whisper committed dp/s",
         "lmaster CPU %", "carbon-cache CPU %", "senders CPU %", "lmaster RSS MB", "carbon RSS MB", "sent",
         "in whisper", "lost", "share %", "drain s", "others %"],
        rows,
    )  # fmt: skip
    cores = "; ".join(
        f"{row['configuration']}: carbon-cache {' and '.join(map(str, row['cores']['carbon-cache']))}, "
        f"lmaster {row['cores']['lmaster']}, senders {row['cores']['senders']}"
        for row in result["rows"]
    )
    ratios = result["ratios"]
    return (
        f"{text}\n  cores: {cores}\n  stored dp/s (run): every point in whisper / (first batch sent → last point "
        f"landed)\n  two caches / one cache: {number(ratios['stored_whole_run'], 2)}× stored over the run; in the "
        f"window {number(ratios['received_in_window'], 2)}× received, {number(ratios['committed_in_window'], 2)}× "
        f"committed, {number(ratios['handed_in_window'], 2)}× handed over by lmaster"
    )


def show_profile(result: dict) -> str:
    lines = []
    spy = result.get("py_spy")
    if isinstance(spy, dict):
        lines.append(f"py-spy, lmaster under relay load ({number(result['relay_rate_while_profiled'])} dp/s, "
                     f"{spy['samples']} samples):")  # fmt: skip
        for kind in ("self", "total"):
            lines.append(f"  top by {kind}:")
            lines += [f"    {entry['percent']:5.1f} %  {entry['function']}" for entry in spy[kind]]
    else:
        lines.append(f"py-spy: {spy}")
    for name in ("relay_gc", "fanin_gc"):
        lines.append(f"{name}: {json.dumps(result.get(name), default=lambda v: round(v, 1))}")
    fan_spy = result.get("fanin_py_spy")
    if isinstance(fan_spy, dict):
        lines.append(f"py-spy, lmaster under the fan-in (quick window, {fan_spy['samples']} samples):")
        for kind in ("self", "total"):
            lines.append(f"  top by {kind}:")
            lines += [f"    {entry['percent']:5.1f} %  {entry['function']}" for entry in fan_spy[kind]]
    if "fanin" in result:
        lines.append(f"fanin (probe run): {json.dumps(result['fanin'], default=lambda v: round(v, 1))}")
    return "\n".join(lines)


def show_http(result: dict) -> str:
    rows = [[label, number(result[key]["rate"]), number(result[key]["cpu_percent"]), number(result[key]["loss"]),
             number(result[key]["foreign_percent"]), ", ".join(number(row["rate"]) for row in result["rounds"][key])]
            for label, key in (("relay alone", "alone"), ("with HTTP load", "with_http"))]  # fmt: skip
    clients = result.get("clients", {})
    header = ["best round", "delivered dp/s", "lmaster CPU %", "lost", "others' CPU %", "every round dp/s"]
    return table(header, rows) + (
        f"\nlmaster's CPU for the HTTP load alone (no agent sending): {number(result['http_only_cpu_percent'], 1)} %"
        f"\nHTTP connections held by lmaster (fewest seen): {result['http_connections']}; "
        f"polls of /api/nodes (worst round): {clients.get('polls')} answers "
        f"{clients.get('statuses')}, p50 {number(clients.get('latency_p50_ms'), 1)} ms, "
        f"p99 {number(clients.get('latency_p99_ms'), 1)} ms, max {number(clients.get('latency_max_ms'), 1)} ms"
    )


def show_idle(result: dict) -> str:
    labels = {"plain": "plain relay", "idle": "[http] + stream + alarms, no client"}
    rounds = sorted((row["round"], key, row) for key in labels for row in result["rounds"][key])
    per_round = table(
        ["round", "lmaster", "delivered dp/s", "lmaster CPU %", "CPU % per M dp/s", "load core %", "lost",
         "others' CPU %"],
        [[str(index), labels[key], number(row["rate"]), number(row["cpu_percent"]),
          number(row["cpu_per_million"], 1), number(row["load_core_percent"]), number(row["loss"]),
          number(row["foreign_percent"])] for index, key, row in rounds],
    )  # fmt: skip
    summary = table(
        ["lmaster, 16 connections, D frames", "median dp/s", "best dp/s", "median CPU % per M dp/s", "RSS MB"],
        [[labels[key], number(result["median_rate"][key]), number(result[key]["rate"]),
          number(result["cpu_per_million"][key], 1), number(result[key]["rss_mb"])] for key in labels],
    )  # fmt: skip
    rules = "; ".join(f"{metric} {operator} {value:g}" for _, metric, operator, value in result["alarm_rules"])

    def percent(ratio: float | None) -> str:
        return f"{number(100 * ratio, 1)} %" if ratio else "-"

    return (
        f"{per_round}\n\n{summary}\n"
        f"idle cost: the relay keeps {percent(result['ratio'])} of its plain rate (judged: {result['judged']}); "
        f"best rounds: {percent(result['ratio_best'])}; CPU per datapoint, plain over idle: "
        f"{percent(result['cpu_ratio'])}; alarm rules: {rules}"
    )


def show_stream(result: dict) -> str:
    rows = [[label, number(result[key]["rate"]), number(result[key]["cpu_percent"]), number(result[key]["loss"]),
             number(result[key]["foreign_percent"])]
            for label, key in (("no stream client", "alone"), ("1,000 stream clients", "with_clients"))]  # fmt: skip
    clients, lone = result.get("clients", {}), result.get("lone_client", {})
    return table(["relay at 50,000 dp/s offered", "relayed dp/s", "lmaster CPU %", "lost", "others' CPU %"], rows) + (
        f"\ndelivered to {clients.get('clients')} clients: {number(clients.get('delivered_per_second'))} dp/s "
        f"(dropped {clients.get('dropped')}); probe delay to a client over {clients.get('probes')} arrivals: "
        f"p50 {number(clients.get('delay_p50_ms'), 1)} ms, p99 {number(clients.get('delay_p99_ms'), 1)} ms, "
        f"max {number(clients.get('delay_max_ms'), 1)} ms"
        f"\nprobe delay to one more client alone in its process: p50 {number(lone.get('delay_p50_ms'), 1)} ms, "
        f"p99 {number(lone.get('delay_p99_ms'), 1)} ms, max {number(lone.get('delay_max_ms'), 1)} ms"
    )


def show_dashboards(result: dict) -> str:
    row = result["rows"][0]
    return table(
        ["make-fructosa-dashboard", "best s", "median s", "worst s", "CPU s (median)", "written MB", "runs"],
        [[f"{row['hosts']:,} hosts ({row['gpu_hosts']} with GPUs)", number(row["best_s"], 2),
          number(row["median_s"], 2), number(row["worst_s"], 2), number(row["cpu_s_median"], 2),
          number(row["written_mb"], 1), str(row["runs"])]],
    )  # fmt: skip


SHOW = {
    "relay": show_relay,
    "lmaster": show_relay,
    "idle": show_idle,
    "agent": show_agent,
    "fanin": show_fanin,
    "e2e": show_e2e,
    "profile": show_profile,
    "http": show_http,
    "stream": show_stream,
    "dashboards": show_dashboards,
}


def show_targets(results: dict) -> str:
    rows = [
        [target["target"], target["measured"], "PASS" if target["pass"] else "MISS"]
        for name in TARGETED
        if name in results and "targets" in results[name]
        for target in results[name]["targets"]
    ]
    return table(["target", "measured", ""], rows)


def reexec_with_snapshot(revision: str, argv: list[str]) -> int:
    """Extract ``revision``'s fructosa/ into a temporary directory and run again
    with it first on PYTHONPATH (for this process and every daemon started)."""
    snapshot = tempfile.mkdtemp(prefix="fructosa-snapshot-")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "fructosa"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", snapshot], input=archive.stdout, check=True)
    env = {**os.environ, SNAPSHOT_VARIABLE: f"{revision}={snapshot}"}
    env["PYTHONPATH"] = os.pathsep.join(part for part in (snapshot, env.get("PYTHONPATH", "")) if part)
    try:
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv], env=env)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, _frame: child.send_signal(number))
        return child.wait()
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows: a smoke run of under 3 minutes")
    parser.add_argument("--only", default=",".join(DEFAULT), help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results.json",
                        help="where the results go (default: benchmarks/results.json)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    parser.add_argument("--commit", metavar="REV", help="measure fructosa/ as committed in REV (e.g. HEAD), "
                        "not the working tree (useful while others edit it)")  # fmt: skip
    parser.add_argument("--wait-idle", type=float, default=None, metavar="S",
                        help="wait up to S seconds for other processes to stop using the CPU before each "
                        "benchmark (default 120, 10 with --quick; they would distort the figures)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.commit and not os.environ.get(SNAPSHOT_VARIABLE):
        return reexec_with_snapshot(args.commit, sys.argv[1:] if argv is None else argv)
    if args.wait_idle is None:
        args.wait_idle = 10.0 if args.quick else 120.0
    IDLE_WAIT[0] = args.wait_idle / 2
    for signum in (signal.SIGTERM, signal.SIGINT):  # stop every child we started, also when killed
        signal.signal(signum, lambda number, _frame: sys.exit(128 + number))
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    info = machine()
    print(f"FrUCToSA benchmarks{' (quick)' if args.quick else ''}: {info['cores']} cores ({info['cpu']}), "
          f"Python {info['python']}, commit {info['commit']}, fructosa from {info['fructosa']}")  # fmt: skip
    print(f"the program under test is pinned to core {info['relay_core']}; senders, sinks and carbon-cache share "
          f"core {info['load_core']} (the load generators compete with each other, not with the relay)")  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="fructosa-bench-"))
    results: dict = {"machine": info, "quick": args.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    began = time.monotonic()
    try:
        for name in chosen:
            print(f"\n== {name} ==", flush=True)
            busy = wait_for_idle(args.wait_idle)
            if busy:
                print("  WARNING: the machine is not idle; figures are distorted by:")
                for pid, percent, command in busy[:5]:
                    print(f"    pid {pid} at {percent:.0f} %: {command}")
            results.setdefault("foreign_load", {})[name] = [list(item) for item in busy]
            started = time.monotonic()
            try:
                results[name] = BENCHMARKS[name](workdir / name, args.quick)
            except Exception as error:  # report and go on with the next benchmark
                results[name] = {"error": f"{type(error).__name__}: {error}"}
                print(f"  failed: {results[name]['error']}")
                continue
            finally:
                results.setdefault(name, {})["seconds"] = time.monotonic() - started
            print(SHOW[name](results[name]))
    finally:
        results["seconds"] = time.monotonic() - began
        if args.keep:
            print(f"\nlogs and configurations kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if any(name in results and "targets" in results[name] for name in TARGETED):
        print("\n== targets ==")
        print(show_targets(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\n{results['seconds']:.0f} s; results in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
