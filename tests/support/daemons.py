"""Run the real lmaster/lagent console scripts in the foreground for tests.

Each daemon is our child process, stopped only by its own PID. Readiness is
the daemon's own pidfile lock (both daemons take it just before serving)
plus, for lmaster, its listening port accepting connections.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from fructosa.daemon import running_pid

from .carbon import ServerProcess, can_connect

SEED_DIR = Path(__file__).resolve().parent.parent / "data" / "seed-003"


def script(program: str) -> str:
    """The console script installed next to the running interpreter."""
    return str(Path(sys.executable).parent / program)


class Daemon:
    """``PROGRAM -c CONFIG -p PIDFILE start --foreground`` as a child process."""

    def __init__(self, program: str, config: Path, workdir: Path) -> None:
        self.program = program
        self.config = config
        self.pidfile = workdir / f"{program}.pid"
        self.process = ServerProcess(program, workdir / f"{program}.out")

    def start(self, listen_port: int | None = None, timeout: float = 60.0) -> Daemon:
        argv = [script(self.program), "-c", str(self.config), "-p", str(self.pidfile), "start", "--foreground"]
        self.process.launch(argv, cwd=self.config.parent, env={})

        def ready() -> bool:
            if running_pid(str(self.pidfile)) is None:
                return False
            return listen_port is None or can_connect(listen_port)

        self.process.wait_ready(ready, timeout)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.running

    def output(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> None:
        self.process.stop(timeout)

    def kill(self) -> None:
        """``kill -9``: no chance to flush or persist anything."""
        self.process.kill()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def rewrite_ini(text: str, changes: dict[tuple[str, str], str]) -> str:
    """Set ``key = value`` in ``[section]`` of INI text, adding what is missing,
    leaving every other byte as it was (the seed files must stay the seed files)."""
    for (section, key), value in changes.items():
        block = re.search(rf"^\[{re.escape(section)}\]\n(?:(?!\[).*\n?)*", text, flags=re.MULTILINE)
        if block is None:
            text = text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
            continue
        body = block.group(0)
        line = re.compile(rf"^{re.escape(key)}\s*=.*$", flags=re.MULTILINE | re.IGNORECASE)
        if line.search(body):
            new_body = line.sub(f"{key} = {value}", body, count=1)
        else:
            new_body = body.replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n", 1)
        text = text[: block.start()] + new_body + text[block.end() :]
    return text


def seed_configs(workdir: Path, master_port: int, carbon_pickle_port: int) -> tuple[Path, Path]:
    """Seed 003's two files with only ports, the log file and the spools
    (which default to /var/lib/fructosa) moved into ``workdir``."""
    log_file = str(workdir / "limon.log")
    master = rewrite_ini(
        (SEED_DIR / "lmaster.conf").read_text(),
        {
            ("lmaster", "incoming data port"): str(master_port),
            ("lmaster", "spool dir"): str(workdir / "spool-lmaster"),
            ("logging", "filename"): log_file,
            ("Graphite", "carbon receiver pickle port"): str(carbon_pickle_port),
        },
    )
    agent = rewrite_ini(
        (SEED_DIR / "lagent.conf").read_text(),
        {
            ("lmaster", "incoming data port"): str(master_port),
            ("lagent", "spool dir"): str(workdir / "spool-lagent"),
            ("logging", "filename"): log_file,
            ("Graphite", "carbon receiver pickle port"): str(carbon_pickle_port),
        },
    )
    master_path, agent_path = workdir / "lmaster.conf", workdir / "lagent.conf"
    master_path.write_text(master)
    agent_path.write_text(agent)
    return master_path, agent_path
