"""``/api/nodes``: the nodes table, one node, its newest values and its short history."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from ..taps.latest import LatestValues, pattern_problem
from .keys import SETTINGS, STATE
from .state import STATES, HttpState, NodeRecord

routes = web.RouteTableDef()

GROUPABLE = ("state", "agent", "system", "platform", "cpu", "cpus", "memory_bytes", "gpus", "ip_address", "hostname")
"""Attributes ``?group_by=`` accepts: the node's facts that many nodes share."""


def node_json(record: NodeRecord, latest: LatestValues, now: float, slack: float) -> dict[str, Any]:
    memory = latest.get(record.hostname, "VirtualMemory.percent")
    return {
        "hostname": record.hostname,
        "ip_address": record.ip_address,
        "state": record.state(now, slack),
        "last_seen": record.last_seen,
        "heartbeat_interval": record.heartbeat_interval,
        "agent": record.agent,
        "connected_since": record.connected_since,
        "cpu_usage": latest.cpu_percent(record.hostname),
        "mem_usage": memory[1] if memory else None,
        "sensors": dict(record.sensors),
        "cpu": record.cpu,
        "cpus": record.cpus,
        "memory_bytes": record.memory_bytes,
        "boot_time": record.boot_time,
        "system": record.system,
        "platform": record.platform,
        "gpus": list(record.gpus),
    }


def group_key(node: dict[str, Any], attribute: str) -> str:
    """The JSON object key a node goes under: lists joined by ", ", missing values as ``unknown``."""
    value = node[attribute]
    if isinstance(value, list):
        return ", ".join(value) if value else "none"
    return "unknown" if value is None else str(value)


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


@routes.get("/api/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    unknown = set(request.query) - {"group_by", "state"}
    if unknown:
        raise _bad_request(f"unknown parameter {sorted(unknown)[0]!r}; valid: group_by, state")
    group_by = request.query.get("group_by")
    if group_by is not None and group_by not in GROUPABLE:
        raise _bad_request(f"cannot group by {group_by!r}; valid attributes: {', '.join(GROUPABLE)}")
    wanted_state = request.query.get("state")
    if wanted_state is not None and wanted_state not in STATES:
        raise _bad_request(f"unknown state {wanted_state!r}; valid: {', '.join(STATES)}")
    state, settings = request.app[STATE], request.app[SETTINGS]
    key = (group_by, wanted_state)
    caching = settings.nodes_cache_seconds > 0
    cached = state.nodes_cache.get(key) if caching else None
    if cached is not None and (
        time.monotonic() - cached[0] < settings.nodes_cache_seconds or not state.build_budget.available()
    ):  # fresh enough, or building again would take more than the HTTP API's share of lmaster's loop
        return _compressed(web.Response(body=cached[1], content_type="application/json"))
    started = time.monotonic()
    body = json.dumps(_nodes_table(state, settings.heartbeat_slack, group_by, wanted_state)).encode()
    if caching:
        finished = time.monotonic()
        state.build_budget.spend(finished - started)
        state.nodes_cache[key] = (finished, body)
    return _compressed(web.Response(body=body, content_type="application/json"))


def _nodes_table(state: HttpState, slack: float, group_by: str | None, wanted_state: str | None) -> dict[str, Any]:
    """hostname → node, or with ``group_by`` attribute value → hostname → node."""
    now = state.clock()
    nodes = {}
    for record in sorted(state.nodes.nodes(), key=lambda record: record.hostname):
        node = node_json(record, state.latest, now, slack)
        if wanted_state is None or node["state"] == wanted_state:
            nodes[record.hostname] = node
    if group_by is None:
        return nodes
    groups: dict[str, dict[str, Any]] = {}
    for hostname, node in nodes.items():
        groups.setdefault(group_key(node, group_by), {})[hostname] = node
    return groups


def _compressed(response: web.Response) -> web.Response:
    """Compressed when the client accepts it: 5,000 nodes are 2.5 MB of JSON, a tenth of that gzipped."""
    if len(response.body or b"") > 16_384:
        response.enable_compression()
    return response


def _known_host(request: web.Request) -> str:
    host = request.match_info["host"]
    state = request.app[STATE]
    if state.nodes.node(host) is None and host not in state.latest:
        raise web.HTTPNotFound(text=f"unknown host {host!r}")
    return host


@routes.get("/api/nodes/{host}")
async def one_node(request: web.Request) -> web.Response:
    host = _known_host(request)
    state, settings = request.app[STATE], request.app[SETTINGS]
    record = state.nodes.node(host) or NodeRecord(hostname=host)
    return web.json_response(node_json(record, state.latest, state.clock(), settings.heartbeat_slack))


@routes.get("/api/nodes/{host}/latest")
async def latest_values(request: web.Request) -> web.Response:
    host = _known_host(request)
    values = request.app[STATE].latest.latest(host) or {}
    return web.json_response({path: list(point) for path, point in values.items()})


@routes.get("/api/nodes/{host}/history")
async def history(request: web.Request) -> web.Response:
    host = _known_host(request)
    pattern = request.query.get("series")
    problem = None if pattern is None else pattern_problem(pattern)
    if problem:
        raise _bad_request(f"bad series {pattern[:80]!r}: {problem}")
    series = request.app[STATE].latest.history(host, pattern) or {}
    return web.json_response({path: {"times": times, "values": values} for path, (times, values) in series.items()})
