"""Run a real carbon-cache (and optionally graphite-web) inside a temp dir.

The FrUCToSA master relays metrics to Graphite's carbon; end-to-end tests,
benchmarks and the demo script need a genuine carbon-cache to talk to, not a
fake socket, so that protocol mistakes show up as missing whisper data.

This module deliberately does not import pytest: fixtures live in conftest.py,
and benchmarks/demos use the classes directly (both are context managers).

Everything carbon touches (config, whisper files, logs, pid file) lives under
the given base directory, all listeners bind to 127.0.0.1 on free ports, and
``stop()`` only ever signals the PID this object started.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import pickle
import random
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

import whisper

Datapoint = tuple[str, tuple[float, float]]
"""One carbon pickle-protocol datapoint: ``(path, (timestamp, value))``."""

Series = list[tuple[int, float]]
"""Non-empty whisper points of one metric: ``[(timestamp, value), ...]``."""

POLL_INTERVAL = 0.1
"""Seconds between polls; carbon flushes its cache at most every ~1 s anyway."""

PICKLE_CHUNK = 500
"""Datapoints per pickle message (carbon's MAX_DATAPOINTS_PER_MESSAGE)."""


class CarbonError(RuntimeError):
    """carbon-cache (or graphite-web) died or never became ready."""


PORT_BLOCK_BASE = 20000
PORT_BLOCK_SIZE = 1000
PORT_BLOCKS = 12
"""Ports handed out by :func:`free_ports`: block ``k`` is ``20000 + 1000 k`` to ``+ 999``, all below
Linux's default ephemeral range (32768-60999), in which every outgoing connection takes its local port."""


def _port_block() -> range:
    """This process's block of ports: 0 for a plain run, 1 + N for pytest-xdist's worker ``gwN``.

    Workers of one run never choose each other's ports, so a port chosen by one worker cannot be taken
    by another in the moment before its daemon binds it.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = 1 + int(worker[2:]) % (PORT_BLOCKS - 1) if worker.startswith("gw") and worker[2:].isdigit() else 0
    start = PORT_BLOCK_BASE + index * PORT_BLOCK_SIZE
    return range(start, start + PORT_BLOCK_SIZE)


def _ephemeral_ports() -> range:
    try:
        low, high = (int(word) for word in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(32768, 61000)
    return range(low, high + 1)


_next_port: dict[range, int] = {}
"""Where :func:`free_ports` looks next in each block: a random place at first (other test runs on the
same machine start elsewhere), then onwards, so a port just given out is the last to be given again."""


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that are free on 127.0.0.1 right now.

    They come from this process's block (see :func:`_port_block`), outside the ephemeral range, so no
    outgoing connection (of the tests or of a daemon) can take one before its server binds it; a port
    counts as free when a socket binds it without SO_REUSEADDR (so none of it is left in TIME_WAIT either).
    All sockets are held open until every port is chosen, so the ports are distinct; where the block
    overlaps the ephemeral range (an unusual ``ip_local_port_range``) the kernel chooses instead.
    """
    block, ephemeral = _port_block(), _ephemeral_ports()
    if block.start <= ephemeral[-1] and ephemeral.start <= block[-1]:
        return _kernel_chosen_ports(count)
    sockets: list[socket.socket] = []
    try:
        position = _next_port.setdefault(block, random.randrange(len(block)))
        for _ in range(len(block)):
            port = block[position]
            position = (position + 1) % len(block)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
            if len(sockets) == count:
                break
        _next_port[block] = position
        if len(sockets) < count:
            raise CarbonError(f"fewer than {count} free ports in {block.start}-{block[-1]}")
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _kernel_chosen_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def can_connect(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=POLL_INTERVAL):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 30) -> str:
    """Last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return "\n".join(text.splitlines()[-lines:])


class ServerProcess:
    """A server subprocess logging to a file, stoppable only by its own PID."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise CarbonError(f"{self.name} has not been started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def launch(self, argv: list[str], cwd: Path, env: Mapping[str, str]) -> None:
        if self.running:
            raise CarbonError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        # A crashed benchmark/demo without a `with` block must not leak it.
        atexit.register(self.stop)

    def wait_ready(self, is_ready: Callable[[], bool], timeout: float) -> None:
        """Poll ``is_ready`` until true; stop it and raise if it dies or times out."""
        deadline = time.monotonic() + timeout
        while not is_ready():
            if not self.running:
                problem = f"exited with status {self.returncode} during startup"
            elif time.monotonic() > deadline:
                problem = f"not ready after {timeout} s"
            else:
                time.sleep(POLL_INTERVAL / 2)
                continue
            self.stop()
            raise CarbonError(f"{self.name} {problem}; log {self.log_path}:\n{tail(self.log_path)}")

    def kill(self) -> None:
        """SIGKILL our PID (a crash, for fault tests) and reap it."""
        atexit.unregister(self.stop)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM our PID, SIGKILL it after ``timeout`` s. Idempotent."""
        atexit.unregister(self.stop)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class CarbonCache:
    """A real ``carbon-cache.py`` writing 1-second whisper files under ``base_dir``.

    Layout under ``base_dir``: ``conf/`` (carbon.conf, storage-*.conf),
    ``storage/whisper/`` (``data_dir``), ``log/carbon-cache.log`` (stdout and
    stderr of the ``--debug`` process) and ``run/`` (pid file).

    ``retentions`` is the storage schema of every metric (default: 1 point/s
    for 2 h). ``settings`` overrides/extends the generated ``[cache]`` section,
    e.g. ``{"CARBON_METRIC_INTERVAL": 10}`` to get carbon's self-metrics back.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        python: str | Path | None = None,
        script: str | Path | None = None,
        retentions: str = "1s:2h",
        settings: Mapping[str, object] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.python = Path(python or sys.executable)
        # The venv that runs the tests also provides carbon's launcher script.
        self.script = Path(script or Path(sys.executable).parent / "carbon-cache.py")
        self.retentions = retentions
        self.extra_settings = dict(settings or {})
        self.startup_timeout = startup_timeout
        self.conf_dir = self.base_dir / "conf"
        self.storage_dir = self.base_dir / "storage"
        self.log_path = self.base_dir / "log" / "carbon-cache.log"
        self._process = ServerProcess("carbon-cache", self.log_path)
        self._ports: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> CarbonCache:
        """Write the config, launch carbon and block until it accepts connections."""
        if self.running:
            raise CarbonError(f"carbon-cache is already running (pid {self.pid})")
        self.reserve_ports()
        self._write_config()
        argv = [str(self.python), str(self.script), f"--config={self.conf_dir / 'carbon.conf'}", "--debug", "start"]
        self._process.launch(argv, cwd=self.base_dir, env={})
        self._process.wait_ready(
            lambda: all(can_connect(port) for port in self._ports.values()),
            self.startup_timeout,
        )
        return self

    def reserve_ports(self) -> CarbonCache:
        """Choose the ports now (kept across restarts), so a test can point
        lmaster at a carbon that is not up yet."""
        if not self._ports:
            line, pickle_, query = free_ports(3)
            self._ports = {"line": line, "pickle": pickle_, "query": query}
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the carbon-cache we started (and nothing else). Idempotent.

        carbon does not flush its cache on SIGTERM: points it received but had
        not yet written are lost, so ``wait_for`` them before stopping.
        """
        self._process.stop(timeout)

    def __enter__(self) -> CarbonCache:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def line_port(self) -> int:
        return self._port("line")

    @property
    def pickle_port(self) -> int:
        return self._port("pickle")

    @property
    def query_port(self) -> int:
        return self._port("query")

    @property
    def data_dir(self) -> Path:
        """LOCAL_DATA_DIR: root of the whisper tree."""
        return self.storage_dir / "whisper"

    def _port(self, name: str) -> int:
        if name not in self._ports:
            raise CarbonError("carbon-cache has not been started")
        return self._ports[name]

    def _write_config(self) -> None:
        for directory in (self.conf_dir, self.data_dir, self.storage_dir / "lists"):
            directory.mkdir(parents=True, exist_ok=True)
        cache = {
            "STORAGE_DIR": self.storage_dir,
            "LOCAL_DATA_DIR": self.data_dir,
            "WHITELISTS_DIR": self.storage_dir / "lists",
            "CONF_DIR": self.conf_dir,
            "LOG_DIR": self.base_dir / "log",
            "PID_DIR": self.base_dir / "run",
            "USER": "",
            "ENABLE_LOGROTATION": False,
            "LINE_RECEIVER_INTERFACE": "127.0.0.1",
            "LINE_RECEIVER_PORT": self.line_port,
            "PICKLE_RECEIVER_INTERFACE": "127.0.0.1",
            "PICKLE_RECEIVER_PORT": self.pickle_port,
            "CACHE_QUERY_INTERFACE": "127.0.0.1",
            "CACHE_QUERY_PORT": self.query_port,
            "ENABLE_UDP_LISTENER": False,
            "UDP_RECEIVER_INTERFACE": "127.0.0.1",
            "UDP_RECEIVER_PORT": self.line_port,
            # No rate limiting: tests must never lose creates/updates to a bucket.
            "MAX_CACHE_SIZE": "inf",
            "MAX_UPDATES_PER_SECOND": "inf",
            "MAX_CREATES_PER_MINUTE": "inf",
            "CACHE_WRITE_STRATEGY": "sorted",
            # Only what the system under test sent should show up in data_dir.
            "CARBON_METRIC_INTERVAL": 0,
            # Tags would make carbon POST to a graphite-web that isn't there.
            "ENABLE_TAGS": False,
            "LOG_UPDATES": False,
            "LOG_CACHE_HITS": False,
            "LOG_LISTENER_CONN_SUCCESS": False,
        }
        cache.update(self.extra_settings)
        carbon_conf = "[cache]\n" + "".join(f"{key} = {value}\n" for key, value in cache.items())
        (self.conf_dir / "carbon.conf").write_text(carbon_conf)
        (self.conf_dir / "storage-schemas.conf").write_text(
            f"[everything]\npattern = .*\nretentions = {self.retentions}\n"
        )
        (self.conf_dir / "storage-aggregation.conf").write_text(
            "[everything]\npattern = .*\nxFilesFactor = 0\naggregationMethod = average\n"
        )

    # -- feeding carbon directly ---------------------------------------------

    def send_plaintext(self, lines: Iterable[str]) -> None:
        """Send ``"path value timestamp"`` lines to the plaintext receiver."""
        payload = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        with socket.create_connection(("127.0.0.1", self.line_port), timeout=5) as sock:
            sock.sendall(payload.encode())

    def send_pickle(self, datapoints: Iterable[Datapoint]) -> None:
        """Send ``(path, (timestamp, value))`` tuples with the pickle protocol.

        Wire format: 4-byte big-endian length, then a protocol-2 pickle of a list
        of datapoints; split into several messages like carbon's own relays do.
        """
        points = list(datapoints)
        with socket.create_connection(("127.0.0.1", self.pickle_port), timeout=5) as sock:
            for i in range(0, len(points), PICKLE_CHUNK):
                body = pickle.dumps(points[i : i + PICKLE_CHUNK], protocol=2)
                sock.sendall(struct.pack("!L", len(body)) + body)

    # -- reading whisper data ------------------------------------------------

    def whisper_file(self, path: str) -> Path:
        """Whisper file of a metric: ``a.b.c`` -> ``data_dir/a/b/c.wsp``."""
        return self.data_dir.joinpath(*path.split(".")).with_suffix(".wsp")

    def metric_paths(self) -> set[str]:
        """Every metric that has a whisper file so far."""
        return {".".join(wsp.relative_to(self.data_dir).with_suffix("").parts) for wsp in self.data_dir.rglob("*.wsp")}

    def series(self, path: str, since: int | None = None) -> Series:
        """Non-empty points of ``path`` with timestamp >= ``since``.

        ``since`` defaults to the start of the finest archive. Raises
        FileNotFoundError when carbon has not created the metric (yet).
        """
        wsp = str(self.whisper_file(path))
        if since is None:
            header = whisper.info(wsp)  # None when the file does not exist
            if header is None:
                raise FileNotFoundError(wsp)
            since = int(time.time()) - header["archives"][0]["retention"]
        # whisper's fromTime is exclusive; step back one second to include `since`.
        fetched = whisper.fetch(wsp, since - 1)
        if fetched is None:  # range entirely in the future or past retention
            return []
        (start, end, step), values = fetched
        return [
            (ts, value)
            for ts, value in zip(range(start, end, step), values, strict=True)
            if value is not None and ts >= since
        ]

    def wait_for(
        self,
        path: str,
        predicate: Callable[[Series], bool] = bool,
        *,
        since: int | None = None,
        timeout: float = 30.0,
    ) -> Series:
        """Poll until ``predicate(series(path, since))`` holds; return that series.

        carbon-cache receives into memory and writes whisper files from a
        background thread (sleeping ~1 s when idle), so data shows up with a
        delay: polling is the only readiness check. It waits for at least one
        point (a whisper file is created before its first point is written), then
        for ``predicate``. The default deadline is long (a loaded 2-core
        machine holds agents, lmaster and carbon-cache up for seconds) and
        costs nothing when the data comes. On timeout raises AssertionError
        naming the metrics that do exist, which usually reveals a path typo.
        """
        deadline = time.monotonic() + timeout
        last: Series | None = None
        while True:
            try:
                last = self.series(path, since)
            except (FileNotFoundError, whisper.CorruptWhisperFile):
                pass  # not created yet, or caught mid-creation
            else:
                if last and predicate(last):  # a file just created holds no point yet: predicates read points[-1]
                    return last
            if not self.running:
                raise CarbonError(f"carbon-cache is not running; log:\n{tail(self.log_path)}")
            if time.monotonic() > deadline:
                state = "no whisper file" if last is None else f"last series {last}"
                existing = "\n  ".join(sorted(self.metric_paths())) or "<none>"
                raise AssertionError(
                    f"metric {path!r} not as expected after {timeout} s ({state}).\n"
                    f"Metrics present in {self.data_dir}:\n  {existing}"
                )
            time.sleep(POLL_INTERVAL)


class GraphiteWeb:
    """graphite-web's ``/render`` API over a CarbonCache's whisper files.

    Optional: needs ``graphite-web`` (and its Django) importable by ``python``;
    runs ``python -m django runserver`` (same as django-admin) in the
    foreground. It also queries carbon's cache port (CARBONLINK), so like a
    production Graphite it returns points carbon has received but not yet
    flushed, though only for metrics whose whisper file already exists.
    """

    def __init__(
        self,
        carbon: CarbonCache,
        *,
        python: str | Path | None = None,
        startup_timeout: float = 60.0,
        events: bool = False,
    ) -> None:
        self.carbon = carbon
        self.python = Path(python or sys.executable)
        self.startup_timeout = startup_timeout
        self.events = events
        """Create graphite-web's database first, for the events API (``/events/``)."""
        self.base_dir = carbon.base_dir / "graphite-web"
        self.log_path = self.base_dir / "runserver.log"
        self._process = ServerProcess("graphite-web", self.log_path)
        self.port = 0

    @staticmethod
    def is_available() -> bool:
        """Whether graphite-web is importable by the current interpreter."""
        return all(importlib.util.find_spec(name) for name in ("graphite", "django"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GraphiteWeb:
        """Write local settings, run Django's dev server, wait until it answers."""
        (self.port,) = free_ports(1)
        for directory in (self.base_dir / "log", self.base_dir / "conf"):
            directory.mkdir(parents=True, exist_ok=True)
        settings_module = "fructosa_graphite_settings"
        (self.base_dir / f"{settings_module}.py").write_text(self._settings())
        argv = [str(self.python), "-m", "django", "runserver", f"127.0.0.1:{self.port}", "--noreload"]
        env = {
            "DJANGO_SETTINGS_MODULE": "graphite.settings",
            "GRAPHITE_SETTINGS_MODULE": settings_module,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(self.base_dir), os.environ.get("PYTHONPATH")])),
        }
        if self.events:  # the events API stores events in the Django database
            migrate = [str(self.python), "-m", "django", "migrate", "--run-syncdb", "-v", "0"]
            subprocess.run(migrate, cwd=self.base_dir, env={**os.environ, **env}, check=True,
                           capture_output=True, timeout=self.startup_timeout)  # fmt: skip
        self._process.launch(argv, cwd=self.base_dir, env=env)
        self._process.wait_ready(self._answers, self.startup_timeout)
        return self

    def events_of(self, tags: str) -> list[dict]:
        """Events with all these (space-separated) tags, from ``/events/get_data``."""
        query = urllib.parse.urlencode({"tags": tags, "from": "-1d", "until": "now"})
        with urllib.request.urlopen(f"{self.url}/events/get_data?{query}", timeout=10) as resp:
            return json.load(resp)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the dev server we started. Idempotent."""
        self._process.stop(timeout)

    def __enter__(self) -> GraphiteWeb:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self._process.pid

    def render(self, target: str, from_: str = "-5min", until: str = "now") -> list[dict]:
        """``/render?format=json``: ``[{"target": ..., "datapoints": [[v, ts], ...]}]``."""
        query = urllib.parse.urlencode({"target": target, "from": from_, "until": until, "format": "json"})
        try:
            with urllib.request.urlopen(f"{self.url}/render?{query}", timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")[-2000:]
            raise CarbonError(
                f"graphite-web render {target!r} failed: {err}\n{body}\nlog {self.log_path}:\n{tail(self.log_path)}"
            ) from err

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/version", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _settings(self) -> str:
        """graphite local_settings pointing at the carbon's whisper dir."""
        values: dict[str, object] = {
            "SECRET_KEY": "fructosa-tests",
            "TIME_ZONE": "UTC",
            "STORAGE_DIR": str(self.carbon.storage_dir),
            "WHISPER_DIR": str(self.carbon.data_dir),
            "STANDARD_DIRS": [str(self.carbon.data_dir)],
            "LOG_DIR": str(self.base_dir / "log"),
            "CONF_DIR": str(self.base_dir / "conf"),
            "INDEX_FILE": str(self.base_dir / "index"),
            "DATABASES": {
                "default": {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": str(self.base_dir / "graphite.db"),
                }
            },
            "STORAGE_FINDERS": ["graphite.finders.standard.StandardFinder"],
            "CARBONLINK_HOSTS": [f"127.0.0.1:{self.carbon.query_port}:a"],
            "USE_WORKER_POOL": False,
            "FIND_CACHE_DURATION": 0,
            "DEFAULT_CACHE_DURATION": 0,
        }
        return "".join(f"{key} = {value!r}\n" for key, value in values.items())
