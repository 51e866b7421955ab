"""INI configuration → typed objects, with FrUCToSA 0.3.2's keys and defaults.

Both daemons read one INI file (configparser syntax, ``#`` comments, keys
with spaces). Problems that would make the daemon misbehave raise
:class:`ConfigError` with one line naming file, section, key and value;
harmless oddities (unknown sensors or keys, a ``[Graphite]`` section in the
agent's file) become warnings that the daemon logs once logging is set up.

Every key is declared once (:mod:`.schema`), in :mod:`.agent`,
:mod:`.master` and :mod:`.common`; sensors declare their own options. The
loading (:mod:`.loader`), ``check``'s printout (:mod:`.effective`) and the
example files (``python -m fructosa.config.examples``) derive from that.

lmaster's half (:mod:`.master`, which brings alarms, jobs and the sinks'
ring) is imported on first use of one of its names (:func:`__getattr__`),
so that ``lagent``, which loads only its own file, does not carry lmaster's
modules in its memory.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ..logs import LoggingConfig
from .agent import (
    AGENT_SCHEMA,
    DEFAULT_AGENT_CONFIG,
    DEFAULT_AGENT_SPOOL,
    AgentConfig,
    load_agent_config,
    parse_hostname,
)
from .common import LinkConfig, SpoolConfig, parse_spool_size
from .locations import DEFAULT_MASTER_CONFIG
from .reader import ConfigError, did_you_mean
from .sensor_sections import SensorConfig
from .values import (
    LOG_LEVELS,
    parse_bool,
    parse_existing_file,
    parse_host,
    parse_http_url,
    parse_int,
    parse_level,
    parse_path,
    parse_port,
    parse_positive_float,
    parse_positive_int,
    parse_size,
)

if TYPE_CHECKING:
    from .master import (
        DEFAULT_MASTER_SPOOL,
        MASTER_SCHEMA,
        GraphiteConfig,
        MasterConfig,
        SlurmConfig,
        UpstreamConfig,
        load_master_config,
        parse_prefix,
    )

SENSOR_SECTION_PREFIX = "sensor:"

MASTER_NAMES = frozenset(
    {
        "DEFAULT_MASTER_SPOOL",
        "MASTER_SCHEMA",
        "GraphiteConfig",
        "MasterConfig",
        "SlurmConfig",
        "UpstreamConfig",
        "load_master_config",
        "parse_prefix",
    }
)
"""Names of :mod:`.master` this package exports, imported when first asked for."""

__all__ = [
    "AGENT_SCHEMA",
    "DEFAULT_AGENT_CONFIG",
    "DEFAULT_AGENT_SPOOL",
    "DEFAULT_MASTER_CONFIG",
    "DEFAULT_MASTER_SPOOL",
    "LOG_LEVELS",
    "MASTER_SCHEMA",
    "SENSOR_SECTION_PREFIX",
    "AgentConfig",
    "ConfigError",
    "GraphiteConfig",
    "LinkConfig",
    "LoggingConfig",
    "MasterConfig",
    "SensorConfig",
    "SlurmConfig",
    "SpoolConfig",
    "UpstreamConfig",
    "did_you_mean",
    "effective_agent_ini",
    "effective_master_ini",
    "load_agent_config",
    "load_master_config",
    "log_findings",
    "parse_bool",
    "parse_existing_file",
    "parse_host",
    "parse_hostname",
    "parse_http_url",
    "parse_int",
    "parse_level",
    "parse_path",
    "parse_port",
    "parse_positive_float",
    "parse_positive_int",
    "parse_prefix",
    "parse_size",
    "parse_spool_size",
]


def __getattr__(name: str) -> Any:
    """lmaster's names, from :mod:`.master` imported on first use (see the module's docstring)."""
    if name in MASTER_NAMES:
        value = getattr(importlib.import_module(".master", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def effective_agent_ini(cfg: AgentConfig) -> str:
    """lagent's whole configuration with every default filled in; loading it gives ``cfg`` again."""
    from .effective import effective_ini  # only ``check`` prints it

    return effective_ini(AGENT_SCHEMA, cfg)


def effective_master_ini(cfg: MasterConfig) -> str:
    """lmaster's whole configuration with every default filled in; loading it gives ``cfg`` again."""
    from .effective import effective_ini
    from .master import MASTER_SCHEMA

    return effective_ini(MASTER_SCHEMA, cfg)


def log_findings(cfg: AgentConfig | MasterConfig, logger: logging.Logger) -> None:
    """Log what loading noticed, once logging is set up."""
    for notice in cfg.notices:
        logger.info("%s", notice)
    for warning in cfg.warnings:
        logger.warning("%s", warning)
