"""Alarm routes: the Metric Proxy's (``/alarms/...``, same requests and answers) and FrUCToSA's (``/api/alarms``).

Metric Proxy compatible (its clients and curl lines work unchanged)::

    POST /alarms/add   {"name", "target", "metric", "operation", "value"}
    POST /alarms/del   {"target", "name"}        GET /alarms/del?targetjob=T&name=N
    GET  /alarms/list  {TARGET: [{"name", "metric", "operator": {"More": 33}, "current", "active", "pretty"}]}
    GET  /alarms       the same, firing alarms only

answered ``{"operation": "...", "success": true}`` or, with status 400,
``success: false`` (plus ``error``). ``target`` is ``main`` (the cluster:
mean over all nodes), a Slurm job id, or a node name; ``operation`` is
``>``, ``<`` or ``=`` (also ``>=``, ``<=``, ``!=``, and the names ``More``,
``Less``, ``Equal``). For a job or node target, a metric given below it
(``cpu_percent``, ``CPUPercent.total``) is completed to the full glob, and a
node target narrows a glob over nodes (``*.CPUPercent.total``) to itself.

FrUCToSA's own, with ``for``, ``severity`` and per-key states::

    GET /api/alarms   GET /api/alarms/NAME   POST /api/alarms   DELETE /api/alarms/NAME

Every change needs the token (the auth middleware guards ``/alarms`` and
``/api``; ``GET /alarms/del`` is a change, never public). Alarms from the
configuration answer 409 to a delete; ``max alarms`` bounds the total (400).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from ..alarms.rules import Rule, RuleError, make_rule
from ..alarms.service import AlarmService, Conflict, LimitReached, Protected
from ..alarms.store import StoreError

ALARMS = web.AppKey("alarms", AlarmService)

PROXY_OPERATIONS = {
    ">": ">", "<": "<", "=": "==", ">=": ">=", "<=": "<=", "==": "==", "!=": "!=",
    "More": ">", "Less": "<", "Equal": "==",
}  # fmt: skip
PROXY_OPERATOR_NAMES = {">": "More", "<": "Less", "==": "Equal", ">=": "MoreOrEqual", "<=": "LessOrEqual",
                        "!=": "NotEqual"}  # fmt: skip
MAIN = "main"
MAIN_AGGREGATE = "cluster-mean"
_NODE = re.compile(r"[A-Za-z0-9_-]{1,200}")


def add_alarm_routes(app: web.Application, alarms: AlarmService) -> None:
    app[ALARMS] = alarms
    app.add_routes(routes)


routes = web.RouteTableDef()


def proxy_answer(operation: str, success: bool = True, status: int = 200) -> web.Response:
    body: dict[str, Any] = {"operation": operation, "success": success}
    if not success:
        body["error"] = operation
    return web.json_response(body, status=status)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; HTTPBadRequest (JSON error) otherwise."""
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def rule_from_proxy(body: dict[str, Any]) -> Rule:
    """A rule from the Metric Proxy's alarm definition; RuleError naming the field."""
    for field in ("name", "target", "metric", "operation", "value"):
        if field not in body:
            raise RuleError(field, f"missing field {field!r}")
    target, metric, operation = body["target"], body["metric"], body["operation"]
    if not isinstance(target, str) or not (target == MAIN or _NODE.fullmatch(target)):
        raise RuleError("target", "target is main (the cluster), a job id or a node name")
    if not isinstance(operation, str) or operation not in PROXY_OPERATIONS:
        raise RuleError("operation", f"unknown operation {str(operation)[:20]!r}; valid: > < = (More Less Equal)")
    if isinstance(body["value"], str):
        raise RuleError("value", "value must be a JSON number")
    if not isinstance(metric, str):
        raise RuleError("metric", "metric must be a string")
    kind, job = MAIN_AGGREGATE, None
    if target.isdigit():
        kind, job = "job", target
        if "SlurmJobs" not in metric.split("."):
            metric = f"*.SlurmJobs.job_{target}.{metric}"
    elif target != MAIN:
        kind = "node"
        components = metric.split(".")
        if any(char in components[0] for char in "*?[{"):  # a glob over nodes: this node only
            metric = ".".join([target, *components[1:]])
        elif components[0] != target:  # given below the node
            metric = f"{target}.{metric}"
    return make_rule(body["name"], metric, PROXY_OPERATIONS[operation], body["value"], target=kind, job=job)


def proxy_target(rule: Rule) -> str:
    if rule.job is not None:
        return rule.job
    first = rule.metric.split(".")[0]
    if rule.target == "node" and _NODE.fullmatch(first):
        return first
    return MAIN


def proxy_entry(alarms: AlarmService, rule: Rule) -> dict[str, Any]:
    states = alarms.evaluator.states(rule.name)
    return {
        "name": rule.name,
        "metric": rule.metric,
        "operator": {PROXY_OPERATOR_NAMES[rule.operator]: rule.value},
        "current": alarms.evaluator.current(rule.name),
        "active": any(state.status == "firing" for state in states.values()),
        "pretty": rule.pretty,
    }


def proxy_listing(alarms: AlarmService, firing_only: bool) -> dict[str, list[dict[str, Any]]]:
    listing: dict[str, list[dict[str, Any]]] = {}
    for rule in alarms.rules():
        entry = proxy_entry(alarms, rule)
        if entry["active"] or not firing_only:
            listing.setdefault(proxy_target(rule), []).append(entry)
    return listing


@routes.post("/alarms/add")
async def proxy_add(request: web.Request) -> web.Response:
    alarms = request.app[ALARMS]
    try:
        body = await json_body(request)
        alarms.add(rule_from_proxy(body))
    except web.HTTPBadRequest as error:
        return proxy_answer(error.text or "bad request", False, 400)
    except RuleError as error:
        return proxy_answer(f"{error.field}: {error}", False, 400)
    except (Conflict, LimitReached, KeyError) as error:
        return proxy_answer(str(error).strip("'\""), False, 400)
    except StoreError as error:
        return proxy_answer(str(error), False, 500)
    return proxy_answer("alarm registered")


@routes.route("*", "/alarms/del")
async def proxy_delete(request: web.Request) -> web.Response:
    if request.method == "GET":
        target, name = request.query.get("targetjob"), request.query.get("name")
        if target is None or name is None:
            return proxy_answer("Missing 'name' GET parameter", False, 400)
    elif request.method == "POST":
        try:
            body = await json_body(request)
        except web.HTTPBadRequest as error:
            return proxy_answer(f"Failed to parse json: {error.text}", False, 400)
        target, name = body.get("target"), body.get("name")
        if not isinstance(target, str) or not isinstance(name, str):
            return proxy_answer("Failed to parse json: target and name are strings", False, 400)
    else:
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    alarms = request.app[ALARMS]
    runtime = alarms.evaluator.runtimes.get(name)
    if runtime is None or proxy_target(runtime.rule) != target:
        return proxy_answer(f"Failed to delete: no alarm {name[:100]!r} on {target[:100]!r}", False, 400)
    try:
        alarms.delete(name)
    except Protected as error:
        return proxy_answer(str(error), False, 409)
    except StoreError as error:
        return proxy_answer(str(error), False, 500)
    return proxy_answer(f"Deleted {name} from {target}")


@routes.get("/alarms/list")
async def proxy_list(request: web.Request) -> web.Response:
    return web.json_response(proxy_listing(request.app[ALARMS], firing_only=False))


@routes.get("/alarms")
async def proxy_raised(request: web.Request) -> web.Response:
    return web.json_response(proxy_listing(request.app[ALARMS], firing_only=True))


# -- FrUCToSA's own -----------------------------------------------------------------------------------


def alarm_json(alarms: AlarmService, rule: Rule) -> dict[str, Any]:
    """A rule, its overall status (the worst of its keys) and every key's state."""
    states = alarms.evaluator.states(rule.name)
    order = ("firing", "pending", "resolved", "ok")
    worst = min((state for state in states.values()), key=lambda state: order.index(state.status), default=None)
    return {
        "name": rule.name,
        "metric": rule.metric,
        "operator": rule.operator,
        "value": rule.value,
        "for": rule.for_seconds,
        "target": rule.target,
        "job": rule.job,
        "severity": rule.severity,
        "action": rule.action,
        "origin": rule.origin,
        "status": worst.status if worst else "ok",
        "since": worst.since if worst else None,
        "firing": sum(1 for state in states.values() if state.status == "firing"),
        "states": {
            key: {"status": state.status, "since": state.since, "value": state.value}
            for key, state in sorted(states.items())
        },
    }


@routes.get("/api/alarms")
async def list_alarms(request: web.Request) -> web.Response:
    alarms = request.app[ALARMS]
    response = web.json_response(
        {"alarms": [alarm_json(alarms, rule) for rule in alarms.rules()], "max_alarms": alarms.max_alarms}
    )
    if len(response.body or b"") > 16_384:
        response.enable_compression()
    return response


@routes.get("/api/alarms/{name}")
async def one_alarm(request: web.Request) -> web.Response:
    alarms = request.app[ALARMS]
    name = request.match_info["name"]
    if name not in alarms.evaluator.runtimes:
        raise web.HTTPNotFound(text=f"no alarm {name[:100]!r}")
    return web.json_response(alarm_json(alarms, alarms.evaluator.runtimes[name].rule))


API_FIELDS = ("name", "metric", "operator", "value", "for", "target", "severity", "action", "job")


@routes.post("/api/alarms")
async def add_alarm(request: web.Request) -> web.Response:
    alarms = request.app[ALARMS]
    body = await json_body(request)
    unknown = sorted(set(body) - set(API_FIELDS))
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown field {unknown[0][:40]!r}; valid: {', '.join(API_FIELDS)}")
    if isinstance(body.get("value"), str) or isinstance(body.get("for"), str):
        raise web.HTTPBadRequest(text=f"{'value' if isinstance(body.get('value'), str) else 'for'}: must be a number")
    try:
        rule = make_rule(body.get("name"), body.get("metric"), body.get("operator"), body.get("value"),
                         body.get("for", 0.0), body.get("target", "node"), body.get("severity", "warning"),
                         body.get("action"), job=body.get("job"))  # fmt: skip
        if rule.job is not None and rule.target != "job":
            raise RuleError("job", "job narrows a job target")
        alarms.add(rule)
    except RuleError as error:
        raise web.HTTPBadRequest(text=f"{error.field}: {error}") from None
    except KeyError as error:
        raise web.HTTPBadRequest(text=f"action: {str(error).strip(chr(39) + chr(34))}") from None
    except LimitReached as error:
        raise web.HTTPBadRequest(text=f"max alarms: {error}") from None
    except Conflict as error:
        raise web.HTTPConflict(text=str(error)) from None
    except StoreError as error:
        raise web.HTTPInternalServerError(text=str(error)) from None
    return web.json_response(alarm_json(alarms, rule), status=201)


@routes.delete("/api/alarms/{name}")
async def delete_alarm(request: web.Request) -> web.Response:
    alarms = request.app[ALARMS]
    name = request.match_info["name"]
    try:
        alarms.delete(name)
    except KeyError:
        raise web.HTTPNotFound(text=f"no alarm {name[:100]!r}") from None
    except Protected as error:
        raise web.HTTPConflict(text=str(error)) from None
    except StoreError as error:
        raise web.HTTPInternalServerError(text=str(error)) from None
    return web.json_response({"deleted": name})
