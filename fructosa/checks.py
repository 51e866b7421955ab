"""Checks of the environment a configuration needs (files, directories, hosts).

``lagent check`` / ``lmaster check`` report every problem found here; ``start``
runs the same checks and refuses what it cannot run with.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from .config import AgentConfig, LinkConfig
from .spool import directory_exposure
from .wire import auth

if TYPE_CHECKING:
    from .config import MasterConfig  # named only: importing it would load lmaster's half into lagent


def resolvable(host: str, port: int) -> str | None:
    """None when ``host`` resolves, else the resolver's reason."""
    try:
        # An ASCII name as bytes: a str goes through the idna codec (unicodedata, stringprep) in every agent.
        socket.getaddrinfo(host.encode() if host.isascii() else host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        return str(error)
    return None


def _nearest_existing(path: str) -> str:
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def writable_file(path: str) -> str | None:
    """None when ``path`` can be appended to (or created), else why not."""
    if os.path.isdir(path):
        return "is a directory"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else "not writable"
    parent = _nearest_existing(os.path.dirname(os.path.abspath(path)))
    if parent != os.path.dirname(os.path.abspath(path)):
        return f"directory {os.path.dirname(os.path.abspath(path))} does not exist"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"directory {parent} not writable"


def usable_directory(path: str) -> str | None:
    """None when ``path`` is (or can be created as) a writable directory."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            return "not a directory"
        return None if os.access(path, os.W_OK | os.X_OK) else "not writable"
    parent = _nearest_existing(path)
    return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot be created ({parent} not writable)"


def _tls_problem(link: LinkConfig, server: bool, section: str = "lmaster") -> str | None:
    if auth.openssl_blocked():  # a reload of lagent started without TLS: it says TLS needs a restart
        return None
    try:
        if server:
            auth.server_context_for(link)
        else:
            auth.client_context_for(link)
    except OSError as error:  # ssl.SSLError is an OSError
        return f"[{section}] tls: cannot use the certificate settings: {error}"
    return None


def _common(cfg: AgentConfig | MasterConfig, spool_section: str) -> list[str]:
    problems = []
    if cfg.logging.filename is not None and (reason := writable_file(cfg.logging.filename)):
        problems.append(f"[logging] filename = {cfg.logging.filename!r}: {reason}")
    if cfg.logging.syslog and not os.path.exists("/dev/log"):
        problems.append("[logging] send to syslog = yes: no syslog socket /dev/log on this host")
    if cfg.spool is not None and (reason := usable_directory(cfg.spool.directory)):
        where = "" if cfg.spool.explicit else " (the default; memory-only buffering then)"
        problems.append(f"[{spool_section}] spool dir = {cfg.spool.directory!r}: {reason}{where}")
    if cfg.spool is not None and (exposure := directory_exposure(cfg.spool.directory))[0]:
        problems.append(f"[{spool_section}] {exposure[1]}")  # refused at start; the sticky case only warns there
    return problems


def agent_problems(cfg: AgentConfig) -> list[str]:
    problems = _common(cfg, "lagent")
    if reason := resolvable(cfg.master_host, cfg.master_port):
        problems.append(f"[lmaster] host = {cfg.master_host!r}: cannot resolve: {reason}")
    if reason := _tls_problem(cfg.link, server=False):
        problems.append(reason)
    if cfg.journal_file and (reason := writable_file(cfg.journal_file)):
        problems.append(f"[lagent] journal file = {cfg.journal_file!r}: {reason}")
    return problems


def master_problems(cfg: MasterConfig) -> list[str]:
    problems = _common(cfg, "lmaster")
    for destination in cfg.graphite.destinations if cfg.graphite.enabled else ():
        if reason := resolvable(destination.host, destination.port):
            key = "destinations" if len(cfg.graphite.destinations) > 1 else "host ="
            problems.append(f"[Graphite] {key} {destination.host!r}: cannot resolve: {reason}")
    if reason := resolvable(cfg.listen_host, cfg.listen_port):
        problems.append(f"[lmaster] host = {cfg.listen_host!r}: cannot resolve: {reason}")
    if reason := _tls_problem(cfg.link, server=True):
        problems.append(reason)
    if cfg.upstream is not None and (reason := _tls_problem(cfg.upstream.link, server=False, section="upstream")):
        problems.append(reason)
    return problems
