"""``GET /api/openapi.json``: the API described as OpenAPI 3.1, the contract the tests check responses against."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import __version__
from .nodes import GROUPABLE
from .state import STATES

routes = web.RouteTableDef()

_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_NUMBER = {"type": ["number", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "what went wrong, in one line"}},
        "additionalProperties": False,
    },
    "Node": {
        "type": "object",
        "required": [
            "hostname",
            "ip_address",
            "state",
            "last_seen",
            "heartbeat_interval",
            "agent",
            "connected_since",
            "cpu_usage",
            "mem_usage",
            "sensors",
            "cpu",
            "cpus",
            "memory_bytes",
            "boot_time",
            "system",
            "platform",
            "gpus",
        ],  # fmt: skip
        "additionalProperties": False,
        "properties": {
            "hostname": {"type": "string"},
            "ip_address": _NULLABLE_STRING,
            "state": {"enum": list(STATES), "description": "late: silent for more than two heartbeat intervals"},
            "last_seen": {**_NULLABLE_NUMBER, "description": "Unix time of the last frame"},
            "heartbeat_interval": {"type": "number", "minimum": 0},
            "agent": {**_NULLABLE_STRING, "description": "agent version, e.g. lagent 0.4.0"},
            "connected_since": _NULLABLE_NUMBER,
            "cpu_usage": {**_NULLABLE_NUMBER, "description": "percent: CPUPercent.total or the mean over CPUs"},
            "mem_usage": {**_NULLABLE_NUMBER, "description": "percent: VirtualMemory.percent"},
            "sensors": {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "description": "sensor name → interval in seconds",
            },
            "cpu": _NULLABLE_STRING,
            "cpus": {"type": ["integer", "null"]},
            "memory_bytes": {"type": ["integer", "null"]},
            "boot_time": _NULLABLE_NUMBER,
            "system": _NULLABLE_STRING,
            "platform": _NULLABLE_STRING,
            "gpus": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Nodes": {
        "type": "object",
        "description": "hostname → node",
        "additionalProperties": {"$ref": "#/components/schemas/Node"},
    },
    "GroupedNodes": {
        "type": "object",
        "description": "attribute value → hostname → node (lists joined by ', ', null as 'unknown')",
        "additionalProperties": {"$ref": "#/components/schemas/Nodes"},
    },
    "Latest": {
        "type": "object",
        "description": "Graphite path → [timestamp, value]",
        "additionalProperties": {
            "type": "array",
            "prefixItems": [{"type": "number"}, {"type": "number"}],
            "minItems": 2,
            "maxItems": 2,
        },
    },  # fmt: skip
    "History": {
        "type": "object",
        "description": "Graphite path → its recent points, oldest first",
        "additionalProperties": {
            "type": "object",
            "required": ["times", "values"],
            "additionalProperties": False,
            "properties": {
                "times": {"type": "array", "items": {"type": "number"}},
                "values": {"type": "array", "items": {"type": "number"}},
            },
        },
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_COMMON_ERRORS = {
    "400": _error("a bad parameter, or a token in the query string"),
    "401": _error("no token or a wrong one (header Authorization: Bearer TOKEN)"),
    "405": _error("method not allowed (the Allow header lists the allowed ones)"),
    "413": _error("request body over 1 MiB"),
}
_HOST = {"name": "host", "in": "path", "required": True, "schema": {"type": "string"}, "description": "short host name"}


def _get(summary: str, ok: dict[str, Any], parameters: list[dict[str, Any]], not_found: bool) -> dict[str, Any]:
    responses = {"200": ok, **_COMMON_ERRORS}
    if not_found:
        responses["404"] = _error("unknown host")
    return {"get": {"summary": summary, "parameters": parameters, "responses": responses}}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "FrUCToSA lmaster API",
            "version": __version__,
            "description": "Nodes known to lmaster, their newest values and short history. "
            "Every /api request needs the header Authorization: Bearer TOKEN unless the server runs with public read "
            "(GET only); tokens in the query string are refused. Errors are JSON objects with one 'error' string.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/nodes": _get(
                "every node, keyed by host name, or grouped by an attribute",
                {
                    "description": "nodes (grouped when group_by is given)",
                    "content": {
                        "application/json": {
                            "schema": {
                                "anyOf": [
                                    {"$ref": "#/components/schemas/Nodes"},
                                    {"$ref": "#/components/schemas/GroupedNodes"},
                                ]
                            }
                        }
                    },
                },  # fmt: skip
                [
                    {"name": "group_by", "in": "query", "required": False, "schema": {"enum": list(GROUPABLE)}},
                    {"name": "state", "in": "query", "required": False, "schema": {"enum": list(STATES)}},
                ],
                not_found=False,
            ),
            "/api/nodes/{host}": _get("one node", _ok("Node", "the node"), [_HOST], not_found=True),
            "/api/nodes/{host}/latest": _get(
                "the newest value of every series of the node", _ok("Latest", "newest values"), [_HOST], not_found=True
            ),
            "/api/nodes/{host}/history": _get(
                "recent points of the node's main series (CPU, memory, traffic, jobs)",
                _ok("History", "series"),
                [
                    _HOST,
                    {
                        "name": "series",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 200},
                        "description": "glob on the path below the host: * one component, ** any (e.g. CPUPercent.*)",
                    },
                ],
                not_found=True,
            ),
            "/api/openapi.json": _get(
                "this document", {"description": "OpenAPI 3.1", "content": {"application/json": {}}}, [], False
            ),
        },
    }


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
