"""A live pipeline for lmaster's web page: carbon-cache ← lmaster (with ``[http]``) ← several lagents.

The page tests and ``scripts/screenshots.py`` both need the real thing
running on loopback: a real carbon-cache, one lmaster serving its page with a
bearer token read from a file, and lagent processes that differ only in
their ``[lagent] hostname``. Every process is our child and is stopped by
its own PID (:class:`~tests.support.daemons.Daemon`), agents first.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .carbon import CarbonCache, free_ports
from .configs import master_ini
from .daemons import Daemon

AgentConf = Callable[[str, int, Path], str]
"""``(hostname, lmaster's port, the agent's own directory) -> lagent.conf text``."""


class LivePipeline:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    def __init__(self, workdir: Path, agent_conf: AgentConf) -> None:
        self.workdir = workdir
        self.agent_conf = agent_conf
        self.master_port, self.http_port = free_ports(2)
        self.token = secrets.token_hex(16)
        self.token_file = workdir / "http-token"
        self.carbon = CarbonCache(workdir / "carbon")
        self.master: Daemon | None = None
        self.agents: dict[str, Daemon] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def start(self, hosts: tuple[str, ...]) -> LivePipeline:
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        try:
            self.carbon.start()
            http = {"listen": f"127.0.0.1:{self.http_port}", "token file": self.token_file, "public read": "no"}
            conf = self.workdir / "lmaster.conf"
            conf.write_text(
                master_ini(self.workdir, self.master_port, self.carbon.pickle_port, sections={"http": http})
            )
            self.master = Daemon("lmaster", conf, self.workdir).start(listen_port=self.http_port)
            for host in hosts:
                self.start_agent(host)
        except BaseException:
            self.stop()
            raise
        return self

    def start_agent(self, host: str) -> Daemon:
        """One more lagent named ``host``, in a directory of its own."""
        home = self.workdir / host
        home.mkdir(exist_ok=True)
        conf = home / "lagent.conf"
        conf.write_text(self.agent_conf(host, self.master_port, home))
        agent = Daemon("lagent", conf, home)
        self.agents[host] = agent
        return agent.start()

    def api(self, path: str) -> Any:
        """A JSON answer of lmaster's API, with the token."""
        request = urllib.request.Request(
            self.url + path.lstrip("/"),
            headers={"Accept": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def stop(self) -> None:
        """Agents, then lmaster, then carbon-cache; each by its own PID."""
        for agent in self.agents.values():
            agent.stop()
        if self.master is not None:
            self.master.stop()
        self.carbon.stop()

    def __enter__(self) -> LivePipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
