"""Errors as JSON, the body-size limit and bearer-token authentication, for every request.

Order (outermost first): :func:`json_errors` turns any exception into
``{"error": "..."}`` with its status (never an HTML page or a traceback);
:func:`body_limit` answers 413 from the ``Content-Length`` header before
anything reads the body; :func:`authenticate` guards ``/api``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .keys import GUARD, SETTINGS

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN_QUERY_KEYS = frozenset({"token", "access_token", "api_key", "apikey", "key", "auth", "bearer"})
"""Query parameters refused outright: a token in a URL ends up in logs, proxies and browser history."""
READ_METHODS = frozenset({"GET", "HEAD"})
GUARDED_PREFIXES = ("/api", "/alarms")
"""Paths the token guards: the API, and the Metric-Proxy-compatible alarm routes."""
CHANGING_GETS = frozenset({"/alarms/del"})
"""GET routes that change something (the Metric Proxy's delete): never let through by public read."""
REFUSAL_LOG_INTERVAL = 60.0
"""Seconds between two log lines about refused requests from one peer address."""


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app.get(GUARD)
    if guard is not None:
        guard.request_started(request.transport)
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise  # redirects and 304s are not errors
        headers = {key: value for key, value in error.headers.items() if key.lower() in ("allow", "www-authenticate")}
        message = error.text if error.text and not error.text.startswith(f"{error.status}:") else error.reason
        if message == error.reason and error.status == 404:
            message = f"no such resource: {request.path[:200]}"
        elif message == error.reason and error.status == 405:
            message = f"{request.method} is not allowed here; allowed: {headers.get('Allow', 'none')}"
        return error_response(error.status, message, headers)
    except Exception:
        log.exception("HTTP %s %s failed", request.method, request.path)
        return error_response(500, "internal error (the server's log has the details)")


@web.middleware
async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    limit = request.app[SETTINGS].max_body
    if request.content_length is not None and request.content_length > limit:
        return error_response(413, f"request body of {request.content_length} bytes (at most {limit})")
    return await handler(request)


class _RefusalLog:
    """One log line per peer address and minute, however many requests it sends (bounded in peers)."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL, max_peers: int = 10_000):
        self.interval, self.max_peers = interval, max_peers
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def note(self, peer: str, why: str) -> None:
        now = time.monotonic()
        if now - self.last.get(peer, -self.interval) < self.interval:
            self.suppressed[peer] = self.suppressed.get(peer, 0) + 1
            return
        if len(self.last) >= self.max_peers:
            self.last.clear()
            self.suppressed.clear()
        more = self.suppressed.pop(peer, 0)
        self.last[peer] = now
        log.warning("HTTP request refused from %s: %s%s", peer, why, f" (and {more} more)" if more else "")


def make_authenticate() -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The auth middleware, with its own rate-limited refusal log."""
    refusals = _RefusalLog()

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not any(request.path == prefix or request.path.startswith(prefix + "/") for prefix in GUARDED_PREFIXES):
            return await handler(request)
        peer = request.remote or "unknown"
        if TOKEN_QUERY_KEYS.intersection(key.lower() for key in request.query):
            refusals.note(peer, "token in the query string")
            return error_response(
                400, "a token in the URL is refused (URLs end up in logs); send the header Authorization: Bearer TOKEN"
            )
        settings = request.app[SETTINGS]
        public = settings.public_read and request.method in READ_METHODS and request.path not in CHANGING_GETS
        if settings.token is None or public:
            return await handler(request)
        handles_its_own = getattr(request.match_info.handler, "authenticates_itself", False)
        if handles_its_own and "Authorization" not in request.headers:
            return await handler(request)  # a browser's WebSocket cannot send the header: its first message has it
        scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not offered.strip():
            refusals.note(peer, "no bearer token")
            return _unauthorized("this API needs the header Authorization: Bearer TOKEN")
        if not hmac.compare_digest(offered.strip().encode("utf-8", "surrogateescape"), settings.token):
            refusals.note(peer, "wrong token")
            return _unauthorized("wrong token")
        return await handler(request)

    return authenticate


def _unauthorized(message: str) -> web.Response:
    return error_response(401, message, {"WWW-Authenticate": 'Bearer realm="fructosa"'})


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/api"):
        response.headers.setdefault("Cache-Control", "no-store")
    for key, value in request.app[SETTINGS].extra_headers.items():
        response.headers[key] = value
    return response
