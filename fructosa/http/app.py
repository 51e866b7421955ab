"""The application factory: routes from one module per resource, shared state under typed keys."""

from __future__ import annotations

import warnings

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


def apply_settings(app: web.Application, settings: HttpSettings) -> None:
    """A reload: new settings (token, public read) for the running application.

    aiohttp frowns on changing a started application's state because a handler
    could see half of a change; here one immutable settings object replaces
    another in a single step on the event loop, so every request sees either
    the old settings or the new ones.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        app[SETTINGS] = settings
