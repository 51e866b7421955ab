"""Serving the application: a connection limit at accept and a deadline for a new connection's first request.

aiohttp limits neither the number of open connections nor how long a fresh
connection may take to send its request headers (a slow-loris client holds a
socket forever). :class:`GuardedSite` is a :class:`aiohttp.web.BaseSite`
that listens through :class:`ConnectionGuard`'s protocol factory:

* at accept, when ``max_connections`` connections are already open (aiohttp's
  ``Server.connections``), the newcomer gets a one-line 503 JSON answer and is
  closed, before aiohttp parses a byte of it;
* a connection whose first request has not reached the handlers within
  ``request_timeout`` seconds is closed (the ``json_errors`` middleware marks
  a connection as served when a request arrives);
* idle keep-alive connections are closed after ``idle_timeout`` by aiohttp's
  own ``keepalive_timeout``.

:func:`start` sets this up for every listen address and returns the runner
(``await runner.cleanup()`` stops it).
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web

from .guard import ConnectionGuard
from .keys import GUARD, SETTINGS

__all__ = ["GUARD", "ConnectionGuard", "GuardedSite", "start"]

log = logging.getLogger(__name__)


class GuardedSite(web.BaseSite):
    """A TCP site whose connections pass through a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard, **kwargs):
        super().__init__(runner, **kwargs)
        self.host, self.port, self.guard = host, port, guard

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._ssl_context else 'http'}://{host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.factory(server), self.host, self.port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=True,
        )  # fmt: skip
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]


async def start(app: web.Application) -> tuple[web.AppRunner, list[GuardedSite]]:
    """Serve ``app`` (from :func:`fructosa.http.app.make_app`) on its settings' addresses."""
    settings = app[SETTINGS]
    runner = web.AppRunner(app, keepalive_timeout=settings.idle_timeout, access_log=None, handle_signals=False)
    await runner.setup()
    sites = []
    tls = None
    if settings.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(settings.tls_cert, settings.tls_key)
    try:
        for host, port in settings.listen:
            site = GuardedSite(runner, host, port, app[GUARD], ssl_context=tls)
            await site.start()
            sites.append(site)
            log.info("HTTP API on %s", site.name)
    except (OSError, ssl.SSLError):
        await runner.cleanup()
        raise
    return runner, sites
