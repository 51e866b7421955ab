"""``GET /api/stream``: live datapoints over a WebSocket, by Graphite glob pattern.

Protocol (JSON text messages; README "Live stream" has examples):

* authentication: the ``Authorization: Bearer TOKEN`` header (checked by the
  app's auth middleware), or, for browsers, which cannot set that header on
  a WebSocket, a first message ``{"token": "TOKEN"}`` within
  :data:`TOKEN_WAIT` seconds; a wrong or missing one closes with code 1008;
* client → server: ``{"subscribe": [PATTERN, ...]}`` and
  ``{"unsubscribe": [PATTERN, ...]}`` at any time;
* server → client: after a subscribe, the newest stored value of every
  series the new patterns match, ``{"current": [[path, timestamp, value],
  ...]}``, then ``{"subscribed": [every pattern held]}``; then
  ``{"datapoints": [[path, timestamp, value], ...]}`` as blocks arrive (only
  matching paths; several blocks in one message when the client is behind),
  ``{"dropped": N}`` when the client read too slowly and lost its N oldest
  queued items, ``{"event": {...}}`` for lmaster's events, and
  ``{"error": "..."}`` for a message it did not understand (the connection
  stays open);
* a message over :data:`MAX_MESSAGE` bytes closes the connection with code
  1009 (message too big).

Wiring: ``add_stream_routes(app, hub)`` after :func:`fructosa.http.app.make_app`,
with the :class:`~fructosa.taps.stream.StreamHub` that lmaster's flow feeds.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..taps.stream import PatternError, StreamFull, StreamHub, Subscriber
from .keys import SETTINGS
from .middlewares import error_response

log = logging.getLogger(__name__)

STREAM_PATH = "/api/stream"
STREAM_HUB = web.AppKey("stream_hub", StreamHub)
MAX_MESSAGE = 64 * 1024
"""Bytes in one client message; 100 patterns of 512 characters fit."""
TOKEN_WAIT = 5.0
"""Seconds a client without the header has to send ``{"token": ...}``."""
HEARTBEAT = 30.0
"""Seconds between pings; a client that does not answer is closed."""
CHUNK = 2000
"""Datapoints in one message at most."""
POLICY_VIOLATION = 1008
CLOSE_WAIT = 2.0
"""Seconds lmaster's shutdown waits for clients to take the close frame."""
OPEN_STREAMS = web.AppKey("open_streams", set)
"""(WebSocketResponse, transport) of every open stream, for the shutdown."""


def add_stream_routes(app: web.Application, hub: StreamHub) -> None:
    """Serve ``GET /api/stream`` from ``hub`` (call before the app starts); open streams close at shutdown."""
    app[STREAM_HUB] = hub
    app[OPEN_STREAMS] = set()
    app.router.add_get(STREAM_PATH, stream)
    app.on_shutdown.append(_close_streams)


async def _close_streams(app: web.Application) -> None:
    """Say goodbye (code 1001) to every client, so that the runner's cleanup does not wait for them to leave.

    A stalled client cannot even take the close frame: after :data:`CLOSE_WAIT`
    seconds its connection is cut.
    """
    streams = list(app[OPEN_STREAMS])
    closing = [
        asyncio.ensure_future(ws.close(code=WSCloseCode.GOING_AWAY, message=b"lmaster stops")) for ws, _ in streams
    ]
    if not closing:
        return
    await asyncio.wait(closing, timeout=CLOSE_WAIT)
    for (_, transport), task in zip(streams, closing, strict=True):
        if not task.done():
            task.cancel()
            if transport is not None:
                transport.abort()


async def stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[STREAM_HUB]
    authorized = _header_authorizes(request)
    if authorized is False:
        return error_response(401, "wrong token", {"WWW-Authenticate": 'Bearer realm="fructosa"'})
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return error_response(400, f"{STREAM_PATH} is a WebSocket: connect with the header Upgrade: websocket")
    if hub.full():
        return error_response(503, f"{hub.limits.max_clients} stream clients are connected already")
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=HEARTBEAT)
    await ws.prepare(request)
    entry = (ws, request.transport)
    request.app[OPEN_STREAMS].add(entry)
    try:
        await _serve(ws, request, hub, authorized)
    finally:
        request.app[OPEN_STREAMS].discard(entry)
    return ws


async def _serve(ws: web.WebSocketResponse, request: web.Request, hub: StreamHub, authorized: bool | None) -> None:
    if not authorized and not await _token_message(ws, request):
        return
    try:
        subscriber = hub.connect()
    except StreamFull as full:
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=str(full).encode())
        return
    sender = asyncio.create_task(_send(ws, subscriber), name="stream sender")
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await _handle(hub, subscriber, message.data)
            elif message.type == WSMsgType.BINARY:
                subscriber.put_message({"error": "binary messages are not understood; send JSON text"})
            elif message.type == WSMsgType.ERROR:
                break
    finally:
        hub.disconnect(subscriber)
        sender.cancel()
        await asyncio.wait([sender])  # not "await sender": its CancelledError would read as ours
        if not sender.cancelled() and sender.exception() is not None:
            log.debug("stream to %s: sending failed: %r", request.remote, sender.exception())


stream.authenticates_itself = True  # type: ignore[attr-defined]
"""Without an Authorization header, the auth middleware lets this through: the first message carries the token."""


def _header_authorizes(request: web.Request) -> bool | None:
    """True: no token needed or the header's is right; False: the header's is wrong; None: ask the first message."""
    settings = request.app[SETTINGS]
    if settings.token is None or settings.public_read:
        return True
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, offered = header.partition(" ")
    right = scheme.lower() == "bearer" and hmac.compare_digest(
        offered.strip().encode("utf-8", "surrogateescape"), settings.token
    )
    return right


async def _token_message(ws: web.WebSocketResponse, request: web.Request) -> bool:
    """Whether the first message is ``{"token": RIGHT}``, in time; if not, the connection is closed with why."""
    try:
        message = await ws.receive(timeout=TOKEN_WAIT)
    except asyncio.TimeoutError:
        why = f'send {{"token": "..."}} within {TOKEN_WAIT:g} s (or the header Authorization: Bearer TOKEN)'
    else:
        offered = _parse(message.data).get("token") if message.type == WSMsgType.TEXT else None
        if isinstance(offered, str) and hmac.compare_digest(
            offered.encode("utf-8", "surrogateescape"), request.app[SETTINGS].token or b""
        ):
            return True
        why = "wrong token" if isinstance(offered, str) else 'the first message must be {"token": "..."}'
    log.info("stream client %s refused: %s", request.remote, why)
    await ws.close(code=POLICY_VIOLATION, message=why.encode())
    return False


def _parse(data: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def _handle(hub: StreamHub, subscriber: Subscriber, data: str) -> None:
    """One client message; a bad one is answered ``{"error": ...}`` and changes nothing."""
    try:
        request = json.loads(data)
    except ValueError as error:
        subscriber.put_message({"error": f"not JSON ({error})"[:300]})
        return
    if not isinstance(request, dict) or len(request) != 1 or not {"subscribe", "unsubscribe"} & request.keys():
        subscriber.put_message({"error": 'send {"subscribe": [PATTERN, ...]} or {"unsubscribe": [PATTERN, ...]}'})
        return
    try:
        if "subscribe" in request:
            await hub.subscribe_async(subscriber, request["subscribe"])
        else:
            hub.unsubscribe(subscriber, request["unsubscribe"])
    except PatternError as error:
        subscriber.put_message({"error": str(error)})


async def _send(ws: web.WebSocketResponse, subscriber: Subscriber) -> None:
    """Drain the subscriber's queue to the client; only this task writes, so a slow client blocks only here."""
    while not ws.closed:
        await subscriber.wait()
        dropped, items = subscriber.take()
        if dropped:
            await ws.send_str(json.dumps({"dropped": dropped}))
        for message in _messages(items):
            await ws.send_str(message)


def _messages(items: list[Any]) -> list[str]:
    """Queue items as JSON messages, in order: runs of datapoints (≤ CHUNK), current values, ready messages."""
    messages: list[str] = []
    run: list[list[Any]] = []
    run_kind = "datapoints"
    for item in items:
        if isinstance(item, dict):
            kind = None
        else:
            kind = "current" if len(item) == 4 else "datapoints"
        if run and (kind != run_kind or len(run) >= CHUNK):
            messages.append(json.dumps({run_kind: run}))
            run = []
        if kind is None:
            messages.append(json.dumps(item))
        else:
            run_kind = kind
            run.append([item[0], item[1], item[2]])
    if run:
        messages.append(json.dumps({run_kind: run}))
    return messages
