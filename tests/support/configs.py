"""lmaster and lagent configuration files for tests, built from a few facts.

Tests say what matters to them (ports, a host name, an option under test)
and get a complete file whose spool, log and Graphite settings point into
the test's own directory, never /var/lib/fructosa or a real carbon-cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

Options = Mapping[str, object]

DEFAULT_SENSORS: Mapping[str, Options] = {"CPUPercent": {"time_interval": 1}}


def ini(sections: Mapping[str, Options]) -> str:
    """INI text of ``{section: {key: value}}`` in order; None values are left out."""
    blocks = []
    for section, options in sections.items():
        lines = [f"[{section}]"] + [f"{key} = {value}" for key, value in options.items() if value is not None]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def master_ini(
    workdir: Path,
    port: int | str,
    carbon_port: int | None = None,
    *,
    log: Path | None = None,
    level: str | None = None,
    lmaster: Options | None = None,
    graphite: Options | None = None,
    sections: Mapping[str, Options] | None = None,
) -> str:
    """An lmaster listening on 127.0.0.1:``port``, spooling in ``workdir``,
    relaying to carbon-cache's pickle port ``carbon_port`` (no [Graphite]
    section when None), logging to ``log`` (``workdir``/lmaster.log).
    ``lmaster``/``graphite`` add or override options of those sections."""
    config: dict[str, Options] = {
        "lmaster": {
            "host": "127.0.0.1",
            "incoming data port": port,
            "spool dir": workdir / "spool-lmaster",
            **(lmaster or {}),
        }
    }
    if carbon_port is not None or graphite:
        config["Graphite"] = {"host": "127.0.0.1", "carbon receiver pickle port": carbon_port, **(graphite or {})}
    config["logging"] = {"filename": log or workdir / "lmaster.log", "level": level}
    return ini({**config, **(sections or {})})


def agent_ini(
    workdir: Path,
    master_port: int | str,
    *,
    hostname: str | None = None,
    master_host: str = "127.0.0.1",
    log: Path | None = None,
    level: str | None = None,
    lagent: Options | None = None,
    lmaster: Options | None = None,
    sensors: Mapping[str, Options] = DEFAULT_SENSORS,
    sections: Mapping[str, Options] | None = None,
) -> str:
    """An lagent sending to ``master_host``:``master_port``, spooling in
    ``workdir``, logging to ``log`` (``workdir``/HOSTNAME.log, or lagent.log),
    running ``sensors`` (``{name: options}``: CPUPercent every second by default)."""
    name = hostname or "lagent"
    config: dict[str, Options] = {
        "lmaster": {"host": master_host, "incoming data port": master_port, **(lmaster or {})},
        "lagent": {"hostname": hostname, "spool dir": workdir / f"spool-{name}", **(lagent or {})},
        "logging": {"filename": log or workdir / f"{name}.log", "level": level},
    }
    config.update({f"sensor:{sensor}": options for sensor, options in sensors.items()})
    return ini({**config, **(sections or {})})


def options_of(lines: str) -> dict[str, str]:
    """``key = value`` lines, as written in an INI section, as options."""
    pairs = (line.split("=", 1) for line in lines.splitlines() if line.strip())
    return {key.strip(): value.strip() for key, value in pairs}
