"""lmaster scraping Prometheus targets itself, registered at run time (``/api/scrapes``).

Some things worth watching have an exporter but no agent: a switch's SNMP
exporter, a storage appliance, a license server. lmaster scrapes each
registered target on its own period and hands the samples to ``emit`` as
datapoints under ``HOSTOFURL.Prometheus.METRIC.LABEL.VALUE…`` (the agent
sensor's paths, :mod:`.parsing`), so they reach every sink and tap like an
agent's data. ``HOSTOFURL`` is the URL's host as a path component:
``switch01.example.org`` → ``switch01``, ``10.1.2.3`` → ``10_1_2_3`` (:func:`url_host`).

Every target has its own task: a request with a total ``timeout`` and a
body read to at most ``max_bytes``, then parsing in a worker thread, so a
slow, huge or broken target delays nobody else, and never the relay. Its
``last_scrape``, ``last_error`` and series count are kept for ``GET /api/scrapes``.

The targets (id, URL, period) survive restarts in ``STATE_DIR/scrapes.json``,
written atomically: a temp file in the same directory, fsync, rename, fsync
of the directory: a crash leaves the old list or the new one, never half.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..cancelling import cancel_until_done
from ..graphite_paths import Datapoint, SampleError, sample_to_datapoints, sanitize_component, short_hostname
from ..ratelog import RateLimitedLog
from .parsing import (
    DEFAULT_MAX_SERIES,
    MAX_BODY_BYTES,
    SENSOR,
    ExpositionError,
    Parsed,
    add_samples,
    parse_exposition,
)

log = logging.getLogger(__name__)

STATE_FILE = "scrapes.json"
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"


@dataclass(frozen=True)
class ScrapeSettings:
    min_period: float = 5.0
    max_period: float = 86_400.0
    timeout: float = 10.0
    """Seconds a target has for its whole answer (and at most its period)."""
    max_bytes: int = MAX_BODY_BYTES
    max_series: int = DEFAULT_MAX_SERIES
    max_targets: int = 1000


def url_host(url: str) -> str:
    """The path component for a target's host: the short name, or an IP address with ``_`` for its dots.

    An IP address is kept as it is written (no reverse lookup: the path must not change with DNS), so an
    exporter at ``127.0.0.1`` is ``127_0_0_1``; an IPv6 address is ``ip6_`` and its colons as ``_``
    (``::1`` → ``ip6___1``), as a bare ``__1`` would sanitize to ``1``.
    """
    host = urlsplit(url).hostname or "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return short_hostname(host)
    if address.version == 6:
        return sanitize_component("ip6_" + address.compressed.replace(":", "_"))
    return sanitize_component(host.replace(".", "_"))


def target_problem(url: object, period: object, settings: ScrapeSettings) -> str | None:
    """Why ``url`` and ``period`` cannot be a target, or None."""
    if not isinstance(url, str) or not url or len(url) > 2000:
        return "url must be a string of 1 to 2000 characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as error:
        return f"not a URL: {error}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "only http:// and https:// URLs with a host can be scraped"
    if parts.username or parts.password:
        return "credentials in the URL are refused (they would be shown by GET /api/scrapes)"
    if isinstance(period, bool) or not isinstance(period, (int, float)):
        return "period must be a number of seconds"
    if not settings.min_period <= period <= settings.max_period:
        return f"period must be between {settings.min_period:g} and {settings.max_period:g} seconds"
    return None


@dataclass
class Target:
    id: str
    url: str
    period: float
    last_scrape: float | None = None
    """Unix time of the last successful scrape."""
    last_error: str | None = None
    """Why the last scrape failed; None after a success."""
    series: int = 0
    cut: int = 0
    task: asyncio.Task | None = field(default=None, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "period": self.period,
            "host": url_host(self.url),
            "last_scrape": self.last_scrape,
            "last_error": self.last_error,
            "series": self.series,
        }


class ScrapeError(Exception):
    """One scrape gave nothing usable (one line)."""


class Scrapes:
    """The registered targets and their tasks; see the module docstring. Runs on lmaster's event loop."""

    def __init__(
        self,
        emit: Callable[[list[Datapoint]], None],
        state_dir: Path | str | None = None,
        settings: ScrapeSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.emit = emit
        self.state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
        self.settings = settings or ScrapeSettings()
        self.clock = clock
        self.targets: dict[str, Target] = {}
        self._session: aiohttp.ClientSession | None = None
        self._log = RateLimitedLog(log, period=300.0)

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the saved targets and start scraping them."""
        self._session = aiohttp.ClientSession(
            headers={"Accept": ACCEPT, "User-Agent": "fructosa-lmaster"}, auto_decompress=True
        )
        for saved in self._load():
            target = Target(saved["id"], saved["url"], float(saved["period"]))
            self.targets[target.id] = target
            target.task = asyncio.create_task(self._run(target), name=f"scrape {target.url}")

    async def stop(self) -> None:
        await cancel_until_done(target.task for target in self.targets.values() if target.task is not None)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the API's operations ------------------------------------------------------------------------

    def add(self, url: object, period: object) -> tuple[Target, bool]:
        """Register a target (ValueError with the reason when it cannot be); (target, whether it is new).

        A URL already registered keeps its id and takes the new period.
        """
        problem = target_problem(url, period, self.settings)
        if problem:
            raise ValueError(problem)
        assert isinstance(url, str) and isinstance(period, (int, float))
        existing = next((target for target in self.targets.values() if target.url == url), None)
        if existing is not None:
            existing.period = float(period)
            self._save()
            return existing, False
        if len(self.targets) >= self.settings.max_targets:
            raise ValueError(f"at most {self.settings.max_targets} scrape targets")
        target = Target(secrets.token_hex(6), url, float(period))
        self.targets[target.id] = target
        self._save()
        if self._session is not None:
            target.task = asyncio.create_task(self._run(target), name=f"scrape {url}")
        return target, True

    def remove(self, target_id: str) -> bool:
        target = self.targets.pop(target_id, None)
        if target is None:
            return False
        if target.task is not None:
            target.task.cancel()
        self._save()
        return True

    # -- scraping --------------------------------------------------------------------------------------

    async def _run(self, target: Target) -> None:
        while True:
            started = time.monotonic()
            await self.scrape(target)
            await asyncio.sleep(max(0.0, target.period - (time.monotonic() - started)))

    async def scrape(self, target: Target) -> list[Datapoint]:
        """One scrape of ``target``: its datapoints, also handed to ``emit``; never raises but for cancellation."""
        try:
            text = await self._fetch(target)
            now = self.clock()
            loop = asyncio.get_running_loop()
            parsed, datapoints = await loop.run_in_executor(None, self._datapoints, target, text, now)
        except (ScrapeError, ExpositionError, SampleError) as error:
            target.last_error = str(error)
            self._log.log(logging.WARNING, target.url, "scrape of %s failed: %s", target.url, error)
            return []
        target.last_scrape, target.last_error, target.series = now, None, len(datapoints)
        if parsed.cut:
            target.cut += parsed.cut
            self._log.log(logging.WARNING, ("cut", target.url), "scrape of %s: %d series beyond %d left out",
                          target.url, parsed.cut, self.settings.max_series)  # fmt: skip
        if datapoints:
            try:
                self.emit(datapoints)
            except Exception as error:  # the consumer's problem must not end this target's task
                self._log.log(logging.ERROR, ("emit", target.url), "scrape of %s: emit failed: %s", target.url, error)
        return datapoints

    async def _fetch(self, target: Target) -> str:
        if self._session is None:
            raise ScrapeError("scrapes are not started")
        timeout = min(self.settings.timeout, target.period)
        try:
            body = await asyncio.wait_for(self._read(self._session, target.url, self.settings.max_bytes), timeout)
        except asyncio.TimeoutError:
            raise ScrapeError(f"no complete response within {timeout:g} s") from None
        except aiohttp.ClientError as error:
            raise ScrapeError(f"cannot scrape: {type(error).__name__}: {str(error)[:200]}") from None
        return body.decode("utf-8", "replace")

    @staticmethod
    async def _read(session: aiohttp.ClientSession, url: str, limit: int) -> bytes:
        async with session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                raise ScrapeError(f"HTTP {response.status} {response.reason or ''}".strip())
            if response.content_length is not None and response.content_length > limit:
                raise ScrapeError(f"response of {response.content_length} bytes (at most {limit})")
            body = bytearray()
            async for piece in response.content.iter_chunked(1 << 16):
                body += piece
                if len(body) > limit:
                    raise ScrapeError(f"response over {limit} bytes")
            return bytes(body)

    def _datapoints(self, target: Target, text: str, now: float) -> tuple[Parsed, list[Datapoint]]:
        """Parse and flatten (in a worker thread)."""
        parsed = Parsed()
        add_samples(parsed, parse_exposition(text), max_series=self.settings.max_series)
        if not parsed.tree:
            return parsed, []
        sample = {"host": url_host(target.url), "sensor": SENSOR, "time": now, "value": parsed.tree}
        return parsed, sample_to_datapoints(sample)

    # -- persistence -----------------------------------------------------------------------------------

    def _load(self) -> list[dict[str, Any]]:
        if self.state_path is None:
            return []
        try:
            saved = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            log.error("cannot read the scrape targets in %s (starting without them): %s", self.state_path, error)
            return []
        valid = []
        for entry in saved if isinstance(saved, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            problem = target_problem(entry.get("url"), entry.get("period"), self.settings)
            if problem:
                log.warning("saved scrape target %r left out: %s", entry.get("url"), problem)
                continue
            valid.append(entry)
        return valid[: self.settings.max_targets]

    def _save(self) -> None:
        """Write the targets atomically; a failure is logged (the targets are still scraped, until a restart)."""
        if self.state_path is None:
            return
        try:
            self._write_state(self.state_path)
        except OSError as error:
            self._log.log(logging.ERROR, "save", "cannot save the scrape targets in %s (they will not survive a"
                          " restart): %s", self.state_path, error.strerror or error)  # fmt: skip

    def _write_state(self, path: Path) -> None:
        """Temp file in the same directory, fsync, rename, fsync of the directory: the old list or the new one."""
        entries = [{"id": t.id, "url": t.url, "period": t.period} for t in self.targets.values()]
        directory = path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = directory / f".{STATE_FILE}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as stream:
            json.dump(entries, stream, indent=1)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
