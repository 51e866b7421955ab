"""``GET /metrics``: the latest values for Prometheus (see :mod:`fructosa.prometheus.exposition`).

Wiring: ``add_metrics_routes(app, latest, MetricsSettings(staleness, max_series),
self_metrics=reporter.self_metrics)`` after :func:`~.app.make_app`. The
route is outside ``/api`` (Prometheus' default path) but asks for the same
bearer token when the server has one, unless it runs with public read
(Prometheus sends it with ``authorization: {credentials_file: …}``).

The handler copies the store on the event loop (milliseconds), then builds
the body chunk by chunk in a worker thread and streams it, so the loop keeps
serving agents and other requests while a 100 MB scrape is written.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..prometheus.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    MetricsExposition,
    MetricsSettings,
    host_pattern_problem,
    wants_openmetrics,
)
from ..taps.latest import LatestValues
from .keys import SETTINGS
from .middlewares import error_response

METRICS = web.AppKey("metrics", MetricsExposition)

OPENAPI_PATHS: dict[str, Any] = {
    "/metrics": {
        "get": {
            "summary": "every fresh series in Prometheus' text format (OpenMetrics when Accept asks for it)",
            "description": "Names: fructosa_<sensor>_<fields>{host=...,<instance labels>} (README, section "
            "Prometheus). Hosts silent for 'metrics staleness' seconds are left out; past 'metrics max series' the "
            "rest is left out and counted in fructosa_lmaster_metrics_series_dropped_total. gzip when accepted.",
            "parameters": [
                {
                    "name": "host",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 200},
                    "description": "shell glob on host names (node0*, gpu[0-9]*)",
                }
            ],
            "responses": {
                "200": {
                    "description": "the exposition",
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                    },
                },
                "400": {
                    "description": "a bad host pattern or an unknown parameter",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
                "401": {
                    "description": "no token or a wrong one, when the server has a token and no public read",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        }
    }
}


def add_metrics_routes(
    app: web.Application,
    store: LatestValues,
    settings: MetricsSettings | None = None,
    self_metrics: Callable[[], dict[str, float]] | None = None,
) -> MetricsExposition:
    """Serve ``GET /metrics`` from ``store`` on ``app`` (before it starts); the exposition, for its counters."""
    exposition = MetricsExposition(store, settings, self_metrics)
    app[METRICS] = exposition
    app.router.add_get("/metrics", metrics)
    return exposition


def _refusal(request: web.Request) -> web.Response | None:
    """401 when the server has a token, no public read, and the request lacks it (as ``/api`` does)."""
    settings = request.app.get(SETTINGS)
    if settings is None or settings.token is None or settings.public_read:
        return None
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
        offered.strip().encode("utf-8", "surrogateescape"), settings.token
    ):
        return None
    return error_response(401, "/metrics needs the header Authorization: Bearer TOKEN",
                          {"WWW-Authenticate": 'Bearer realm="fructosa"'})  # fmt: skip


async def metrics(request: web.Request) -> web.StreamResponse:
    refused = _refusal(request)
    if refused is not None:
        return refused
    unknown = set(request.query) - {"host"}
    if unknown:
        return error_response(400, f"unknown parameter {sorted(unknown)[0][:40]!r}; valid: host")
    pattern = request.query.get("host")
    problem = None if pattern is None else host_pattern_problem(pattern)
    if problem:
        return error_response(400, f"bad host pattern {pattern[:80]!r}: {problem}")
    exposition = request.app[METRICS]
    openmetrics = wants_openmetrics(request.headers.get("Accept"))
    gzip = "gzip" in request.headers.get("Accept-Encoding", "").lower()
    await exposition.settle(pattern)  # the held latest values stored in slices: no long stall of the loop
    snapshot = exposition.snapshot(time.time(), pattern)
    chunks = exposition.render(snapshot, openmetrics=openmetrics, gzip=gzip)
    response = web.StreamResponse(
        headers={"Content-Type": OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE, "Vary": "Accept"}
    )
    if gzip:
        response.headers["Content-Encoding"] = "gzip"
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    try:
        while (chunk := await loop.run_in_executor(None, next, chunks, None)) is not None:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:  # the scraper gave up (its scrape timeout): nothing to answer
        pass
    finally:
        try:
            chunks.close()
        except ValueError:  # cancelled while a worker thread was building the next chunk: it ends with the thread
            pass
    return response
