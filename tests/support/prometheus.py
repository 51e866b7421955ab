"""A real Prometheus server and a real node exporter (Debian's packages), run by the tests themselves.

``apt-get install prometheus prometheus-node-exporter`` (``scripts/setup-env``
does it); the packages' system services are never used: each binary runs
as our child process on a free loopback port, with its configuration and
TSDB in a temp dir, and is stopped by its own PID. Readiness is the
program's own answer (``/-/ready``, ``/metrics``), polled with a deadline.
:class:`HostileExporters` serves bad exporters (malformed, huge, slow,
trickling, failing) and :class:`ServedApp` any aiohttp application, each
from a thread of its own, for code under test that blocks.
Like carbon.py this module does not import pytest.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType

from aiohttp import web

from .carbon import ServerProcess, free_ports

GOOD = '# TYPE up gauge\nup 1\n# TYPE jobs_total counter\njobs_total{queue="gpu"} 7\n'
"""What the good hostile-server route answers: two samples."""
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

    def __init__(self, base_dir: Path, startup_timeout: float = 60.0) -> None:
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
    """``prometheus`` scraping ``targets`` (``host:port`` with a ``/metrics`` path) every ``interval`` seconds,
    with the bearer token in ``credentials_file`` when given."""

    def __init__(
        self,
        base_dir: Path,
        targets: list[str],
        interval: float = 1.0,
        startup_timeout: float = 60.0,
        credentials_file: Path | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.targets = targets
        self.interval = interval
        self.credentials_file = credentials_file
        self.startup_timeout = startup_timeout
        (self.port,) = free_ports(1)
        self.process = ServerProcess("prometheus", base_dir / "prometheus.log")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        interval = f"{int(self.interval * 1000)}ms"
        job: dict = {"job_name": "fructosa", "static_configs": [{"targets": self.targets}]}
        if self.credentials_file is not None:
            job["authorization"] = {"type": "Bearer", "credentials_file": str(self.credentials_file)}
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": [job],
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


class ServedApp:
    """An aiohttp application served from a thread of its own on a free loopback port (``with``)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        (self.port,) = free_ports(1)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def call(self, coroutine, timeout: float = 10.0):
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self) -> None:
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:  # handlers still sleeping or trickling
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def __enter__(self):
        self.thread.start()
        self.call(self._start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _fixed(status: int, text: str):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text=text)

    return handler


async def _huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    line = b"huge_series_total 1\n" * 50_000  # 1 MB a write, no Content-Length: only the reader's cap stops it
    for _ in range(40):
        await response.write(line)
    return response


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.Response(text=GOOD)


async def _trickle(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(300):  # a byte every 0.1 s: never silent long enough for a socket timeout
        await response.write(b"#")
        await asyncio.sleep(0.1)
    return response


class HostileExporters(ServedApp):
    """Exporters at ``/good``, ``/malformed``, ``/error`` (500), ``/huge`` (40 MB), ``/slow`` (30 s), ``/trickle``."""

    def __init__(self) -> None:
        app = web.Application()
        app.router.add_get("/good", _fixed(200, GOOD))
        app.router.add_get("/malformed", _fixed(200, "<html>502 Bad Gateway</html>\n{{{"))
        app.router.add_get("/error", _fixed(500, "boom"))
        app.router.add_get("/huge", _huge)
        app.router.add_get("/slow", _slow)
        app.router.add_get("/trickle", _trickle)
        super().__init__(app)
