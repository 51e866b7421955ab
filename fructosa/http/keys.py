"""Typed keys for what the application shares with its handlers and middlewares."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .settings import HttpSettings
from .state import HttpState

if TYPE_CHECKING:
    from .server import ConnectionGuard

SETTINGS = web.AppKey("settings", HttpSettings)
STATE = web.AppKey("state", HttpState)
GUARD = web.AppKey("guard", "ConnectionGuard")
