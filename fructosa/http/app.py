"""The application factory: routes from one module per resource, shared state under typed keys."""

from __future__ import annotations

from aiohttp import web

from . import nodes, openapi, static
from .guard import ConnectionGuard
from .keys import GUARD, SETTINGS, STATE
from .middlewares import body_limit, json_errors, make_authenticate, security_headers
from .settings import HttpSettings
from .state import HttpState


def make_app(settings: HttpSettings, state: HttpState) -> web.Application:
    app = web.Application(
        middlewares=[security_headers, json_errors, body_limit, make_authenticate()],
        client_max_size=settings.max_body,
    )
    app[SETTINGS] = settings
    app[STATE] = state
    app[GUARD] = ConnectionGuard(settings.max_connections, settings.request_timeout)
    app.add_routes(nodes.routes)
    app.add_routes(openapi.routes)
    app.add_routes(static.routes)
    return app
