"""A real Prometheus server and a real node exporter (Debian's packages), run by the tests themselves.

``apt-get install prometheus prometheus-node-exporter`` (``scripts/setup-env``
does it); the packages' system services are never used: each binary runs
as our child process on a free loopback port, with its configuration and
TSDB in a temp dir, and is stopped by its own PID. Readiness is the
program's own answer (``/-/ready``, ``/metrics``), polled with a deadline.
Like carbon.py this module does not import pytest.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType

from .carbon import ServerProcess, free_ports

PROMETHEUS = "prometheus"
NODE_EXPORTER = "prometheus-node-exporter"


def unavailable_reason() -> str | None:
    """Why the real Prometheus programs cannot run here (None when they can)."""
    missing = [name for name in (PROMETHEUS, NODE_EXPORTER) if shutil.which(name) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install prometheus prometheus-node-exporter)"
    return None


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


class NodeExporter:
    """``prometheus-node-exporter`` on a free loopback port (only its cheap collectors, for a fast scrape)."""

    def __init__(self, base_dir: Path, startup_timeout: float = 20.0) -> None:
        self.base_dir = base_dir
        self.startup_timeout = startup_timeout
        (self.port,) = free_ports(1)
        self.process = ServerProcess("node exporter", base_dir / "node-exporter.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self) -> NodeExporter:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{self.port}", "--collector.disable-defaults",
            "--collector.loadavg", "--collector.cpu", "--collector.meminfo", "--collector.stat",
        ]  # fmt: skip
        self.process.launch(argv, cwd=self.base_dir, env={})
        self.process.wait_ready(lambda: http_get(self.url)[0] == 200, self.startup_timeout)
        return self

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> NodeExporter:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class PrometheusServer:
    """``prometheus`` scraping ``targets`` (``host:port`` with a ``/metrics`` path) every ``interval`` seconds."""

    def __init__(
        self, base_dir: Path, targets: list[str], interval: float = 1.0, startup_timeout: float = 60.0
    ) -> None:
        self.base_dir = base_dir
        self.targets = targets
        self.interval = interval
        self.startup_timeout = startup_timeout
        (self.port,) = free_ports(1)
        self.process = ServerProcess("prometheus", base_dir / "prometheus.log")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        interval = f"{int(self.interval * 1000)}ms"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": [{"job_name": "fructosa", "static_configs": [{"targets": self.targets}]}],
        }
        path = self.base_dir / "prometheus.yml"
        path.write_text(json.dumps(config))  # YAML is a superset of JSON
        return path

    def start(self) -> PrometheusServer:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        argv = [
            PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.base_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]  # fmt: skip
        self.process.launch(argv, cwd=self.base_dir, env={})
        self.process.wait_ready(lambda: http_get(f"{self.base_url}/-/ready")[0] == 200, self.startup_timeout)
        return self

    def query(self, expression: str) -> list[dict]:
        """``/api/v1/query`` result vector (``[{"metric": {...}, "value": [time, "text"]}]``); [] on any failure."""
        status, body = http_get(f"{self.base_url}/api/v1/query?{urllib.parse.urlencode({'query': expression})}")
        if status != 200:
            return []
        answer = json.loads(body)
        return answer.get("data", {}).get("result", []) if answer.get("status") == "success" else []

    def targets_health(self) -> list[dict]:
        status, body = http_get(f"{self.base_url}/api/v1/targets")
        return json.loads(body)["data"]["activeTargets"] if status == 200 else []

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
