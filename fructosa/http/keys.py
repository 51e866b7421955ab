"""Typed keys for what the application shares with its handlers and middlewares."""

from __future__ import annotations

from aiohttp import web

from .guard import ConnectionGuard
from .settings import HttpSettings
from .state import HttpState

SETTINGS = web.AppKey("settings", HttpSettings)
STATE = web.AppKey("state", HttpState)
GUARD = web.AppKey("guard", ConnectionGuard)
