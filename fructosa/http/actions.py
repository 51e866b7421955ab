"""``/api/actions``: the declared actions, and running one (``POST /api/actions/NAME``).

The body is ``{"arguments": {"ARG": "value", ...}}``; every argument is
checked against its pattern before anything runs (400 naming it), and the
answer is the run's result ``{"action", "arguments", "result",
"exit_status", "output"}`` (200 even when the command failed: the request
was carried out). Running an action is a change: it always needs the
token, even with public read.
"""

from __future__ import annotations

from aiohttp import web

from ..alarms.actions import ActionError, ActionRunner
from .alarms import json_body

ACTIONS = web.AppKey("actions", ActionRunner)

routes = web.RouteTableDef()


def add_action_routes(app: web.Application, actions: ActionRunner) -> None:
    app[ACTIONS] = actions
    app.add_routes(routes)


@routes.get("/api/actions")
async def list_actions(request: web.Request) -> web.Response:
    runner = request.app[ACTIONS]
    return web.json_response({"actions": [spec.to_json() for spec in runner.specs.values()]})


@routes.post("/api/actions/{name}")
async def run_action(request: web.Request) -> web.Response:
    runner = request.app[ACTIONS]
    name = request.match_info["name"]
    if name not in runner:
        raise web.HTTPNotFound(text=f"no action {name[:100]!r}; declared: {', '.join(runner.specs) or 'none'}")
    body = await json_body(request) if request.can_read_body else {}
    unknown = sorted(set(body) - {"arguments"})
    if unknown:
        raise web.HTTPBadRequest(text=f'unknown field {unknown[0][:40]!r}; the body is {{"arguments": {{...}}}}')
    caller = request.remote or "unknown"
    try:
        result = await runner.run(name, body.get("arguments", {}), caller=f"HTTP client {caller}")
    except ActionError as error:
        raise web.HTTPBadRequest(text=f"arguments: {error}") from None
    return web.json_response(result)
