"""``fructosa-tail``: lmaster's live datapoints as Graphite plaintext lines, for a terminal or a pipe.

Each datapoint whose path matches one of the patterns (Graphite globs, as
in graphite-web) becomes ``path value timestamp``, the line format carbon's
plaintext receiver reads, so ``fructosa-tail 'n01.*.*' | nc carbon 2003``
copies a live feed into another Graphite. The newest stored values come
first, then live ones; ``--last`` prints only those and exits.

Exit status: 0 (``--last`` done, Ctrl-C, closed pipe), 1 (lmaster
unreachable or the connection lost), 2 (bad arguments, a refused token or
pattern). Every failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from .taps.graphite_glob import PatternError, compile_pattern

try:  # websockets >= 13
    from websockets.asyncio.client import connect

    _HEADERS = "additional_headers"
except ImportError:  # pragma: no cover - websockets 12
    from websockets.client import connect  # type: ignore[no-redef]

    _HEADERS = "extra_headers"
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

DEFAULT_URL = "ws://127.0.0.1:8780/api/stream"
"""lmaster's default ``[http] listen``."""
OPEN_TIMEOUT = 10.0
MAX_MESSAGE = 16 << 20
"""Bytes in one message from lmaster (its messages hold at most 2,000 datapoints: about 150 KB)."""
PROGRAM = "fructosa-tail"
POLICY_VIOLATION = 1008
"""The close code of a stream that wanted a token (or a right one)."""


class TailError(Exception):
    """A failure worth one line and an exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def stream_url(url: str) -> str:
    """``ws[s]://HOST:PORT/api/stream`` from what a user types: http(s) and a bare host:port work too."""
    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise TailError(f"--url {url!r}: not a ws://, wss://, http:// or https:// address", 2)
    path = parts.path if parts.path not in ("", "/") else "/api/stream"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def plaintext(path: str, timestamp: float, value: float) -> str:
    when = int(timestamp) if float(timestamp).is_integer() else timestamp
    return f"{path} {value!r} {when}"


def print_points(points: list[list[Any]], out: TextIO) -> None:
    out.write("".join(plaintext(path, when, value) + "\n" for path, when, value in points))
    out.flush()


async def tail(url: str, token: str | None, patterns: list[str], last: bool, out: TextIO) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        connection = await connect(url, open_timeout=OPEN_TIMEOUT, max_size=MAX_MESSAGE, **{_HEADERS: headers})
    except InvalidURI as error:
        raise TailError(f"--url {url!r}: {error}", 2) from error
    except InvalidHandshake as error:
        status = _status(error)
        if status in (401, 403):
            raise TailError(f"lmaster at {url} refused the token (HTTP {status})", 2) from error
        raise TailError(f"lmaster at {url} refused the stream: {error}", 1) from error
    except (OSError, asyncio.TimeoutError) as error:
        raise TailError(f"cannot reach lmaster at {url}: {error or 'timed out'}", 1) from error
    async with connection:
        await connection.send(json.dumps({"subscribe": patterns}))
        try:
            async for raw in connection:
                message = json.loads(raw)
                if "datapoints" in message:
                    print_points(message["datapoints"], out)
                elif "current" in message:
                    print_points(message["current"], out)
                elif "subscribed" in message and last:
                    return
                elif "dropped" in message:
                    print(f"{PROGRAM}: {message['dropped']} datapoints dropped (reading too slowly)", file=sys.stderr)
                elif "error" in message:
                    raise TailError(f"lmaster: {message['error']}", 2)
        except ConnectionClosed as closed:
            if getattr(closed.rcvd, "code", None) == POLICY_VIOLATION:
                raise TailError(f"lmaster refused the stream ({_close_reason(closed)}); see --token-file", 2) from None
            raise TailError(f"lmaster closed the stream ({_close_reason(closed)})", 1) from closed
        raise TailError("lmaster closed the stream", 1)


def _status(error: Exception) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) or getattr(error, "status_code", None)


def _close_reason(closed: ConnectionClosed) -> str:
    received = getattr(closed, "rcvd", None)
    if received is None:
        return "no close frame"
    return f"code {received.code}{': ' + received.reason if received.reason else ''}"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Print lmaster's live datapoints matching Graphite glob patterns as 'path value timestamp' lines.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"lmaster's stream (default {DEFAULT_URL})")
    parser.add_argument("--token-file", type=Path, help="file holding the HTTP API's bearer token")
    parser.add_argument("--last", action="store_true", help="print the newest stored values and exit")
    parser.add_argument("patterns", nargs="+", metavar="PATTERN", help="Graphite glob, e.g. 'n0*.CPUPercent.*'")
    return parser.parse_args(argv)


def run(arguments: argparse.Namespace) -> None:
    url = stream_url(arguments.url)
    for pattern in arguments.patterns:
        try:
            compile_pattern(pattern)
        except PatternError as error:
            raise TailError(f"pattern {pattern[:80]!r}: {error}", 2) from error
    token = None
    if arguments.token_file is not None:
        try:
            token = arguments.token_file.read_text().strip()
        except OSError as error:
            raise TailError(f"--token-file: {error.strerror}: {arguments.token_file}", 2) from error
        if not token:
            raise TailError(f"--token-file {arguments.token_file} is empty", 2)
    asyncio.run(tail(url, token, arguments.patterns, arguments.last, sys.stdout))


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        run(arguments)
    except TailError as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # the reader went away (| head): nothing more to say, not even at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
