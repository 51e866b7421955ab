"""``/api/scrapes``: register, list and remove the Prometheus targets lmaster scrapes itself.

Wiring: ``scrapes = Scrapes(flow.emit, state_dir)``; ``await scrapes.start()``
at start-up, ``await scrapes.stop()`` at shutdown; ``add_scrapes_routes(app,
scrapes)`` after :func:`~.app.make_app`. The routes are under ``/api``, so
the bearer token guards them (public read shows the list, never changes it).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..prometheus.scrapes import Scrapes
from .middlewares import error_response

SCRAPES = web.AppKey("scrapes", Scrapes)

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


_AUTH_ERRORS = {
    "400": _error("a bad request: not JSON, an unknown field, a URL that is not http(s), a period out of range"),
    "401": _error("no token or a wrong one (header Authorization: Bearer TOKEN)"),
}
OPENAPI_SCHEMAS: dict[str, Any] = {
    "ScrapeTarget": {
        "type": "object",
        "required": ["id", "url", "period", "host", "last_scrape", "last_error", "series"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "url": {"type": "string"},
            "period": {"type": "number", "description": "seconds between two scrapes"},
            "host": {"type": "string", "description": "the paths' first component: HOST.Prometheus.METRIC…"},
            "last_scrape": {"type": ["number", "null"], "description": "Unix time of the last successful scrape"},
            "last_error": {"type": ["string", "null"], "description": "why the last scrape failed; null after success"},
            "series": {"type": "integer", "description": "datapoints of the last successful scrape"},
        },
    },
    "ScrapeTargets": {"type": "array", "items": {"$ref": "#/components/schemas/ScrapeTarget"}},
    "NewScrapeTarget": {
        "type": "object",
        "required": ["url", "period"],
        "additionalProperties": False,
        "properties": {
            "url": {"type": "string", "description": "http:// or https:// URL of the exporter's metrics"},
            "period": {"type": "number", "description": "seconds between two scrapes"},
        },
    },
}


def _target_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScrapeTarget"}}},
    }


OPENAPI_PATHS: dict[str, Any] = {
    "/api/scrapes": {
        "get": {
            "summary": "the Prometheus targets lmaster scrapes itself, with their last scrape and error",
            "parameters": [],
            "responses": {
                "200": {
                    "description": "targets",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScrapeTargets"}}},
                },
                **_AUTH_ERRORS,
            },
        },
        "post": {
            "summary": "scrape a target from now on (its samples go to HOST.Prometheus.METRIC.LABEL.VALUE…)",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewScrapeTarget"}}},
            },
            "responses": {
                "201": _target_response("registered"),
                "200": _target_response("the URL was registered already: its period is updated"),
                **_AUTH_ERRORS,
            },
        },
    },
    "/api/scrapes/{id}": {
        "delete": {
            "summary": "stop scraping a target",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"204": {"description": "removed"}, "404": _error("no such target"), **_AUTH_ERRORS},
        }
    },
}


def add_scrapes_routes(app: web.Application, scrapes: Scrapes) -> None:
    """Serve ``/api/scrapes`` over ``scrapes`` on ``app`` (before it starts)."""
    app[SCRAPES] = scrapes
    app.router.add_get("/api/scrapes", list_targets)
    app.router.add_post("/api/scrapes", add_target)
    app.router.add_delete("/api/scrapes/{id}", remove_target)


async def list_targets(request: web.Request) -> web.Response:
    if request.query:
        return error_response(400, f"unknown parameter {sorted(request.query)[0][:40]!r}")
    scrapes = request.app[SCRAPES]
    return web.json_response([target.as_json() for target in scrapes.targets.values()])


async def add_target(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return error_response(400, 'the body must be JSON: {"url": "http://…/metrics", "period": 30}')
    if not isinstance(body, dict):
        return error_response(400, 'the body must be a JSON object: {"url": "http://…/metrics", "period": 30}')
    unknown = sorted(set(body) - {"url", "period"})
    if unknown:
        return error_response(400, f"unknown field {unknown[0][:40]!r}; valid: url, period")
    try:
        target, new = request.app[SCRAPES].add(body.get("url"), body.get("period"))
    except ValueError as error:
        return error_response(400, str(error))
    return web.json_response(target.as_json(), status=201 if new else 200)


async def remove_target(request: web.Request) -> web.Response:
    if not request.app[SCRAPES].remove(request.match_info["id"]):
        return error_response(404, f"no scrape target {request.match_info['id'][:40]!r}")
    return web.Response(status=204)
