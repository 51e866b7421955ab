"""System sensors: boot time and logged-in users."""

from __future__ import annotations

from typing import Any

import psutil

from .base import Option, Sensor, register


@register
class BootTime(Sensor):
    """When the host booted, in Unix seconds: ``HOST.BootTime``."""

    description = "boot time in seconds since the epoch"
    default_interval = 300.0
    blocking = False  # reads /proc or /sys only

    def read(self) -> Any:
        return psutil.boot_time()


@register
class Users(Sensor):
    """Logged-in users. Names and terminals are strings, so the sensor counts:
    ``HOST.Users.sessions`` (login sessions) and ``HOST.Users.unique``
    (distinct user names); with ``per_user = yes`` also
    ``HOST.Users.per_user.NAME`` (sessions of each user)."""

    description = "number of login sessions and distinct logged-in users"
    default_interval = 10.0
    blocking = False  # reads the local utmp file only
    options = (Option("per_user", bool, False, "also the number of sessions of each user"),)

    def read(self) -> Any:
        return psutil.users()

    def shape(self, raw: list[dict]) -> dict:
        names = [session.get("name") or "unknown" for session in raw]
        shaped: dict[str, Any] = {"sessions": len(names), "unique": len(set(names))}
        if self.settings["per_user"]:
            shaped["per_user"] = {name: names.count(name) for name in sorted(set(names))}
        return shaped
