"""``GET /api/openapi.json``: the API described as OpenAPI 3.1, the contract the tests check responses against."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import __version__
from .actions import ACTIONS
from .alarms import ALARMS
from .jobs import OPENAPI_PATHS as JOBS_PATHS  # jobs
from .jobs import OPENAPI_SCHEMAS as JOBS_SCHEMAS  # jobs
from .metrics import OPENAPI_PATHS as METRICS_PATHS
from .nodes import GROUPABLE
from .scrapes import OPENAPI_PATHS as SCRAPES_PATHS
from .scrapes import OPENAPI_SCHEMAS as SCRAPES_SCHEMAS
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


_STATE = {
    "type": "object",
    "required": ["status", "since", "value"],
    "additionalProperties": False,
    "properties": {
        "status": {"enum": ["ok", "pending", "firing", "resolved"]},
        "since": {"type": "number", "description": "Unix time it entered this status"},
        "value": _NULLABLE_NUMBER,
    },
}
ALARM_SCHEMAS: dict[str, Any] = {
    "Alarm": {
        "type": "object",
        "required": [
            "name",
            "metric",
            "operator",
            "value",
            "for",
            "target",
            "job",
            "severity",
            "action",
            "origin",
            "status",
            "since",
            "firing",
            "states",
        ],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "metric": {"type": "string", "description": "Graphite glob, the node first"},
            "operator": {"enum": [">", ">=", "<", "<=", "==", "!="]},
            "value": {"type": "number"},
            "for": {"type": "number", "description": "seconds the condition must hold before it fires"},
            "target": {"enum": ["node", "cluster-mean", "cluster-max", "cluster-sum", "job"]},
            "job": {**_NULLABLE_STRING, "description": "a job target narrowed to one job id"},
            "severity": {"enum": ["info", "warning", "critical"]},
            "action": _NULLABLE_STRING,
            "origin": {"enum": ["api", "configuration", "builtin"]},
            "status": {"enum": ["ok", "pending", "firing", "resolved"], "description": "the worst of its states"},
            "since": _NULLABLE_NUMBER,
            "firing": {"type": "integer", "minimum": 0},
            "states": {
                "type": "object",
                "description": "node, job id or 'cluster' → state",
                "additionalProperties": _STATE,
            },
        },
    },  # fmt: skip
    "Alarms": {
        "type": "object",
        "required": ["alarms", "max_alarms"],
        "additionalProperties": False,
        "properties": {
            "alarms": {"type": "array", "items": {"$ref": "#/components/schemas/Alarm"}},
            "max_alarms": {"type": "integer", "description": "alarms in all; more are refused (400)"},
        },
    },
    "NewAlarm": {
        "type": "object",
        "required": ["name", "metric", "operator", "value"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "maxLength": 100},
            "metric": {"type": "string", "maxLength": 300},
            "operator": {"enum": [">", ">=", "<", "<=", "==", "!="]},
            "value": {"type": "number"},
            "for": {"type": "number", "minimum": 0},
            "target": {"enum": ["node", "cluster-mean", "cluster-max", "cluster-sum", "job"]},
            "severity": {"enum": ["info", "warning", "critical"]},
            "action": {"type": "string"},
            "job": {"type": "string", "pattern": "^[0-9]+$"},
        },
    },
    "Deleted": {
        "type": "object",
        "required": ["deleted"],
        "additionalProperties": False,
        "properties": {"deleted": {"type": "string"}},
    },
    "ProxyAnswer": {
        "type": "object",
        "required": ["operation", "success"],
        "additionalProperties": False,
        "description": "the Metric Proxy's answer",
        "properties": {"operation": {"type": "string"}, "success": {"type": "boolean"}, "error": {"type": "string"}},
    },
    "ProxyAlarms": {
        "type": "object",
        "description": "target (main, a job id or a node) → its alarms, as the Metric Proxy lists them",
        "additionalProperties": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "metric", "operator", "current", "active", "pretty"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "metric": {"type": "string"},
                    "operator": {
                        "type": "object",
                        "description": 'e.g. {"More": 33}',
                        "minProperties": 1,
                        "maxProperties": 1,
                        "additionalProperties": {"type": "number"},
                    },
                    "current": _NULLABLE_NUMBER,
                    "active": {"type": "boolean"},
                    "pretty": {"type": "string"},
                },
            },
        },
    },  # fmt: skip
    "Action": {
        "type": "object",
        "required": ["name", "command", "arguments", "timeout"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "command": {"type": "array", "items": {"type": "string"}, "description": "argument vector template"},
            "arguments": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "argument → the regex its value must match entirely",
            },
            "timeout": {"type": "number"},
        },
    },  # fmt: skip
    "Actions": {
        "type": "object",
        "required": ["actions"],
        "additionalProperties": False,
        "properties": {"actions": {"type": "array", "items": {"$ref": "#/components/schemas/Action"}}},
    },
    "ActionResult": {
        "type": "object",
        "required": ["action", "arguments", "result", "exit_status", "output"],
        "additionalProperties": False,
        "properties": {
            "action": {"type": "string"},
            "arguments": {"type": "object", "additionalProperties": {"type": "string"}},
            "result": {"enum": ["success", "failed"]},
            "exit_status": {"type": ["integer", "null"], "description": "null: killed at its timeout, or not started"},
            "output": {"type": "string", "description": "stdout and stderr, at most 64 KiB"},
        },
    },
}
SCHEMAS.update(ALARM_SCHEMAS)


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


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_PROXY_ERROR = _ok("ProxyAnswer", "refused (success false): a bad definition, an unknown alarm, max alarms reached")


def alarm_paths(alarms: bool = True, actions: bool = True) -> dict[str, Any]:
    """The alarm and action routes (fructosa/http/alarms.py, actions.py), those the app serves."""
    errors = {key: value for key, value in _COMMON_ERRORS.items() if key != "405"}
    paths = {
        "/api/alarms": {
            **_get("every alarm with its states", _ok("Alarms", "alarms"), [], False),
            "post": {"summary": "add an alarm (kept across restarts)", "requestBody": _body("NewAlarm"),
                     "responses": {"201": _ok("Alarm", "added"), **errors,
                                   "409": _error("the name is taken")}},
        },
        "/api/alarms/{name}": {
            **_get("one alarm", _ok("Alarm", "the alarm"), [_NAME], True),
            "delete": {"summary": "delete an alarm added at run time", "parameters": [_NAME],
                       "responses": {"200": _ok("Deleted", "deleted"), **errors, "404": _error("no such alarm"),
                                     "409": _error("declared in the configuration (or built in)")}},
        },
        "/api/actions": _get("the declared actions", _ok("Actions", "actions"), [], False),
        "/api/actions/{name}": {
            "post": {"summary": "run an action; arguments are checked before anything runs", "parameters": [_NAME],
                     "requestBody": {"content": {"application/json": {"schema": {
                         "type": "object", "properties": {"arguments": {"type": "object"}}}}}},
                     "responses": {"200": _ok("ActionResult", "it ran (result says how it went)"), **errors,
                                   "404": _error("no such action")}},
        },
        "/alarms/add": {"post": {"summary": "Metric Proxy: add an alarm", "responses": {
            "200": _ok("ProxyAnswer", "registered"), "400": _PROXY_ERROR, "401": _COMMON_ERRORS["401"]}}},
        "/alarms/del": {
            method: {"summary": "Metric Proxy: delete an alarm (GET ?targetjob=T&name=N, or POST {target, name})",
                     "responses": {"200": _ok("ProxyAnswer", "deleted"), "400": _PROXY_ERROR,
                                   "401": _COMMON_ERRORS["401"],
                                   "409": _ok("ProxyAnswer", "declared in the configuration")}}
            for method in ("get", "post")
        },
        "/alarms/list": _get("Metric Proxy: every alarm by target", _ok("ProxyAlarms", "alarms"), [], False),
        "/alarms": _get("Metric Proxy: the firing alarms by target", _ok("ProxyAlarms", "alarms"), [], False),
    }  # fmt: skip
    return {path: item for path, item in paths.items() if (actions if "/actions" in path else alarms)}


def document(alarms: bool = False, actions: bool = False) -> dict[str, Any]:
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
            "schemas": {**SCHEMAS, **SCRAPES_SCHEMAS, **JOBS_SCHEMAS},
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
            "/api/stream": STREAM_OPERATION,
            "/api/openapi.json": _get(
                "this document", {"description": "OpenAPI 3.1", "content": {"application/json": {}}}, [], False
            ),
            **alarm_paths(alarms, actions),
            **METRICS_PATHS,
            **SCRAPES_PATHS,
            **JOBS_PATHS,
        },
    }


STREAM_OPERATION: dict[str, Any] = {
    "get": {
        "summary": "live datapoints and events over a WebSocket, by Graphite glob pattern",
        "description": "Upgrade to a WebSocket (JSON text messages). Authentication: the Authorization header, or "
        'for browsers a first message {"token": "TOKEN"} within 5 s (else closed with code 1008). '
        'Client → server, at any time: {"subscribe": [PATTERN, ...]} and {"unsubscribe": [PATTERN, ...]}; '
        "patterns are Graphite globs as graphite-web matches them (* ? [...] {a,b} within a component, ** across "
        "components), at most 100 per client and 512 characters each. "
        'Server → client: after a subscribe {"current": [[path, timestamp, value], ...]} (the newest stored value '
        'of each series the new patterns match), then {"subscribed": [PATTERN, ...]}; then '
        '{"datapoints": [[path, timestamp, value], ...]} as datapoints arrive (matching paths only), '
        '{"dropped": N} when the client read too slowly and lost its N oldest queued items, '
        '{"event": {...}} for lmaster\'s events, {"error": "..."} for a message not understood (the connection '
        "stays open). A message over 64 KiB closes the connection with code 1009.",
        "parameters": [],
        "responses": {
            "101": {"description": "switching to the WebSocket protocol"},
            "400": _error("not a WebSocket upgrade, or a token in the query string"),
            "401": _COMMON_ERRORS["401"],
            "405": _COMMON_ERRORS["405"],
            "503": _error("the stream's client limit is reached"),
        },
    }
}


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    served = {resource.canonical for resource in request.app.router.resources()}
    described = document(alarms=ALARMS in request.app, actions=ACTIONS in request.app)
    described["paths"] = {path: item for path, item in described["paths"].items() if path in served}
    return web.json_response(described)
