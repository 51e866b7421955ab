"""The web page: ``/`` and ``/static/…`` served from this package, with no way out of its folder.

Only files under ``fructosa/http/static`` are served. A request path with an
empty, ``.`` or ``..`` component (plain or percent-encoded), an encoded
slash or backslash, a NUL or a symlink leading outside is answered 404, the
same as a missing file, so probing tells nothing. Vendored files carry a
version in their package and are cached for a day; the page's own files are
revalidated every time (ETag / Last-Modified, 304 when unchanged).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .keys import SETTINGS

STATIC_ROOT = (Path(__file__).parent / "static").resolve()
routes = web.RouteTableDef()

_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def resolve(relative: str, raw_path: str) -> Path | None:
    """The file for a request below ``/static/``, or None for anything that is not plainly one."""
    lowered = raw_path.lower()
    if "%2f" in lowered or "%5c" in lowered or "%00" in lowered or "%2e" in lowered:
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") or "\\" in part or "\x00" in part or ":" in part for part in parts):
        return None
    candidate = STATIC_ROOT.joinpath(*parts).resolve()
    if not candidate.is_relative_to(STATIC_ROOT) or not candidate.is_file():
        return None
    return candidate


def _file(request: web.Request, path: Path, max_age: int | None) -> web.FileResponse:
    cache = f"public, max-age={max_age}, immutable" if max_age else "no-cache"
    return web.FileResponse(path, headers={"Cache-Control": cache, "Content-Security-Policy": _CONTENT_SECURITY_POLICY})


@routes.get("/")
async def index(request: web.Request) -> web.FileResponse:
    return _file(request, STATIC_ROOT / "index.html", None)


@routes.get("/static/{path:.+}")
async def static_file(request: web.Request) -> web.FileResponse:
    relative = request.match_info["path"]
    path = resolve(relative, request.raw_path)
    if path is None:
        raise web.HTTPNotFound(text="no such file")
    versioned = relative.startswith("vendor/")
    return _file(request, path, request.app[SETTINGS].static_max_age if versioned else None)
