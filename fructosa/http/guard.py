"""Connection accounting for :mod:`.server`: a limit at accept and a deadline for the first request."""

from __future__ import annotations

import asyncio
import weakref

from aiohttp import web

_BUSY_BODY = b'{"error": "too many open connections"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class ConnectionGuard:
    """Counts and cuts connections for one application; :mod:`.server` explains the policy."""

    def __init__(self, max_connections: int, request_timeout: float):
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.refused = 0
        self.cut_slow = 0
        self._served: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None:
            self._served.add(transport)

    def factory(self, server: web.Server):
        loop = asyncio.get_running_loop()

        def make_protocol() -> asyncio.BaseProtocol:
            if len(server.connections) >= self.max_connections:
                self.refused += 1
                return _Refuse()
            handler = server()
            loop.call_later(self.request_timeout, self._cut_if_silent, handler)
            return handler

        return make_protocol

    def _cut_if_silent(self, handler: web.RequestHandler) -> None:
        transport = handler.transport
        if transport is not None and not transport.is_closing() and transport not in self._served:
            self.cut_slow += 1
            transport.abort()
