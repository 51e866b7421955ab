"""Local Prometheus exporters (node exporter, DCGM, a job's own /metrics) as FrUCToSA paths."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

from ..prometheus.parsing import (
    DEFAULT_MAX_SERIES,
    MAX_BODY_BYTES,
    ExpositionError,
    Filter,
    Parsed,
    add_samples,
    parse_exposition,
)
from ..ratelog import RateLimitedLog
from .base import NO_SAMPLE, Option, Sensor, SensorUnsupported, register

log = logging.getLogger(__name__)

ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
"""The classic text format: the one ``prometheus_client.parser`` reads."""
READ_PIECE = 1 << 16


class ScrapeError(Exception):
    """One URL gave nothing usable (one line, for the log)."""


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be scraped, or None: http or https with a host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as error:
        return f"not a URL: {error}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "only http:// and https:// URLs with a host can be scraped"
    return None


def fetch(url: str, timeout: float, max_bytes: int = MAX_BODY_BYTES) -> str:
    """The exposition at ``url``: at most ``max_bytes``, within about ``timeout`` seconds; ScrapeError otherwise.

    The deadline is checked between reads of 64 KiB; one read waits at most
    ``timeout`` too, so an exporter trickling bytes is cut after about twice
    ``timeout`` at worst.
    """
    import urllib.error  # urllib.request brings http.client and email (~1 MB): imported when a scrape is made
    import urllib.request

    # Exporters are on this node: an ``http_proxy`` in the agent's environment must not send scrapes elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Accept": ACCEPT, "User-Agent": "fructosa-lagent"})
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ScrapeError(f"response of {declared} bytes (at most {max_bytes})")
            pieces, size = [], 0
            while piece := response.read1(READ_PIECE):  # returns what one read brings: the deadline is checked
                size += len(piece)
                if size > max_bytes:
                    raise ScrapeError(f"response over {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise ScrapeError(f"no complete response within {timeout:g} s")
                pieces.append(piece)
    except urllib.error.HTTPError as error:
        raise ScrapeError(f"HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ScrapeError(f"cannot scrape: {reason}") from None
    return b"".join(pieces).decode("utf-8", "replace")


@register
class Prometheus(Sensor):
    """Samples of Prometheus exporters on this node, below ``HOST.Prometheus``.

    Each sample becomes ``HOST.Prometheus.METRIC.LABEL.VALUE.LABEL.VALUE…``,
    labels sorted by name, every component sanitized like all paths
    (prometheus-client's Graphite bridge convention):
    ``node_cpu_seconds_total{cpu="0",mode="idle"}`` →
    ``HOST.Prometheus.node_cpu_seconds_total.cpu.0.mode.idle``. Counters and
    gauges are values; histograms and summaries send ``_sum``, ``_count`` and
    their buckets or quantiles (``exclude = *_bucket`` drops buckets).

    ``include``/``exclude``: shell globs on metric names (a sample's or its
    family's); an empty ``include`` takes everything. At most ``max_series``
    samples per scrape: the rest are cut, counted and logged. An exporter that
    does not answer within ``timeout``, answers more than 16 MiB or not in
    Prometheus' text format gives no samples this time and one log line (at
    most every 5 minutes per URL); the others are still sent. Without
    ``urls`` the sensor says so once and idles.
    """

    description = "samples of local Prometheus exporters (node exporter…): HOST.Prometheus.METRIC.LABEL.VALUE"
    default_interval = 30.0
    options = (
        Option("urls", str, "", "exporter URLs, separated by spaces (e.g. http://127.0.0.1:9100/metrics)"),
        Option("include", str, "", "only metrics matching one of these globs (separated by spaces); empty: all"),
        Option("exclude", str, "", "leave out metrics matching one of these globs (e.g. go_* *_bucket)"),
        Option("max_series", int, DEFAULT_MAX_SERIES, "samples per scrape at most; the rest are cut and counted"),
        Option("timeout", float, 5.0, "seconds an exporter has to answer in full"),
    )

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.series_cut = 0
        """Samples left out by ``max_series`` since the agent started (or reloaded)."""
        self.failures = 0
        self._log = RateLimitedLog(log, period=300.0)

    @property
    def urls(self) -> list[str]:
        return self.settings["urls"].replace(",", " ").split()

    def read(self) -> dict:
        """``{"scrapes": [{"url", "text"} or {"url", "error"}]}``: each URL's text or why there is none."""
        scrapes = []
        for url in self.urls:
            problem = url_problem(url)
            try:
                if problem:
                    raise ScrapeError(problem)
                scrapes.append({"url": url, "text": fetch(url, self.settings["timeout"])})
            except ScrapeError as error:
                scrapes.append({"url": url, "error": str(error)})
        return {"scrapes": scrapes}

    def shape(self, raw: dict) -> dict | None:
        if not self.urls:
            raise SensorUnsupported("no urls configured in [sensor:Prometheus]")
        parsed = Parsed()
        keep = Filter.from_text(self.settings["include"], self.settings["exclude"])
        for scrape in raw.get("scrapes") or ():
            url = str(scrape.get("url"))
            try:
                if "error" in scrape:
                    raise ScrapeError(scrape["error"])
                samples = parse_exposition(str(scrape.get("text", "")))
            except (ScrapeError, ExpositionError) as error:
                self.failures += 1
                self._log.log(logging.WARNING, url, "Prometheus sensor: %s: %s", url, error)
                continue
            add_samples(parsed, samples, keep, self.settings["max_series"])
        if parsed.cut:
            self.series_cut += parsed.cut
            self._log.log(
                logging.WARNING, "cut", "Prometheus sensor: %d samples beyond max_series = %d left out (%d so far)",
                parsed.cut, self.settings["max_series"], self.series_cut,
            )  # fmt: skip
        return parsed.tree or NO_SAMPLE
