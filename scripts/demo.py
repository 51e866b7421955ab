"""The whole pipeline on this machine: carbon-cache ← lmaster ← lagent.

Starts a real carbon-cache (whisper files in a temporary directory), lmaster
and lagent with the example configuration files from conf/ (ports moved to
free ones), waits until the agent's metrics are in Graphite and prints every
path with its latest value, read back from the whisper files. lmaster also
serves its HTTP API and page on 127.0.0.1 with a random token kept in the
demo's temporary directory (``--keep`` prints the URL and the token).
Everything it started is stopped at the end (or on Ctrl-C with --keep).
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fructosa.sensors import REGISTRY  # noqa: E402
from tests.support.carbon import CarbonCache, free_ports  # noqa: E402
from tests.support.daemons import Daemon, rewrite_ini  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12, help="how long to collect before printing (default 12)")
    parser.add_argument("--keep", action="store_true", help="keep everything running until Ctrl-C")
    args = parser.parse_args()
    # `kill PID` (and Ctrl-C, even when started from a script, which ignores SIGINT) stops what we started
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop_on_signal)
    work = Path(tempfile.mkdtemp(prefix="fructosa-demo-"))
    master_port, http_port = free_ports(2)
    token = secrets.token_hex(24)
    token_file = work / "http-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    carbon = CarbonCache(work / "carbon")
    with carbon:
        log = work / "fructosa.log"
        common = {("lmaster", "incoming data port"): str(master_port), ("logging", "filename"): str(log)}
        master_conf, agent_conf = work / "lmaster.conf", work / "lagent.conf"
        master_conf.write_text(
            rewrite_ini(
                (REPO / "conf" / "lmaster.conf").read_text(),
                {
                    **common,
                    ("lmaster", "spool dir"): str(work / "spool-lmaster"),
                    ("Graphite", "carbon receiver pickle port"): str(carbon.pickle_port),
                    ("http", "listen"): f"127.0.0.1:{http_port}",
                    ("http", "token file"): str(token_file),
                },
            )
        )
        agent_conf.write_text(
            rewrite_ini(
                (REPO / "conf" / "lagent.conf").read_text(),
                {**common, ("lagent", "spool dir"): str(work / "spool-lagent")},
            )
        )
        print(f"carbon-cache pid {carbon.pid}, pickle port {carbon.pickle_port}, whisper files in {carbon.data_dir}")
        with Daemon("lmaster", master_conf, work).start(listen_port=master_port) as master:
            print(f"lmaster pid {master.pid}, listening on 127.0.0.1:{master_port}, HTTP on 127.0.0.1:{http_port}")
            with Daemon("lagent", agent_conf, work).start() as agent:
                print(f"lagent pid {agent.pid}, all 20 sensors of conf/lagent.conf; log {log}")
                print(f"collecting for {args.seconds:g} s ...")
                time.sleep(args.seconds)
                show(carbon)
                if args.keep:
                    print(f"\nlmaster's page: http://127.0.0.1:{http_port}/  (token: {token})")
                    print(f"its API: curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{http_port}/api/nodes")
                    print("running; Ctrl-C stops carbon-cache, lmaster and lagent")
                    try:
                        while True:
                            time.sleep(3600)
                    except KeyboardInterrupt:
                        pass
    print(f"stopped; files left in {work}")
    return 0


def stop_on_signal(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def show(carbon: CarbonCache) -> None:
    paths = sorted(carbon.metric_paths())
    print(f"\n{len(paths)} metrics in Graphite (path, newest value, its age):")
    now = time.time()
    for path in paths:
        points = carbon.series(path)
        if points:
            when, value = points[-1]
            print(f"  {path:<60} {value:>20,.2f}   {now - when:4.0f} s ago")
    sensors = {path.split(".")[1] for path in paths if path.count(".") >= 1}
    print(f"\n{len(sensors)} sensors reported: {', '.join(sorted(sensors))}")
    silent = sorted(set(REGISTRY) - sensors)
    if silent:
        print(f"not reporting (the log says why, e.g. no such hardware here): {', '.join(silent)}")


if __name__ == "__main__":
    sys.exit(main())
