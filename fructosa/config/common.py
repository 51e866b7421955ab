"""What both programs' files share: the link's security, the disk spool, ``[logging]``."""

from __future__ import annotations

from collections.abc import Callable

from ..wire import auth
from .loader import SectionRead
from .record import FrozenRecord
from .schema import Key, Section
from .values import (
    format_log_file,
    format_size,
    parse_bool,
    parse_existing_file,
    parse_host,
    parse_int,
    parse_level,
    parse_log_file,
    parse_path,
    parse_port,
    parse_size,
)

MIN_SPOOL_SIZE = 64 << 10


class LinkConfig(FrozenRecord):
    """Security of the agent ↔ master connection (``[lmaster]`` in both files)."""

    secret: bytes | None = None
    secret_file: str | None = None
    tls: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None


class SpoolConfig(FrozenRecord):
    directory: str
    max_bytes: int
    explicit: bool = False
    """Configured by the admin (unusable: refuse to start) or the default
    (unusable, e.g. not root: warn and buffer in memory only)."""


def address_keys(
    host_field: str, port_field: str, host_doc: str, host_example: str = "", host_required: str = ""
) -> tuple[Key, ...]:
    """``host`` and ``incoming data port``: where lmaster listens, seen from either side."""
    return (
        Key("host", host_field, parse_host, host_doc, example=host_example, required=host_required),
        Key("incoming data port", port_field, parse_port, "TCP port lmaster listens on for agents (and relays)"),
    )


def link_keys(prefix: str, server: bool) -> tuple[Key, ...]:
    """Shared secret and TLS of a link; ``server``: lmaster's listening side, else the side that connects."""
    own = "lmaster" if server else "node"
    return (
        Key("secret file", f"{prefix}.secret_file", parse_path,
            "shared secret: a file of at least 16 characters (openssl rand -hex 32), the same on lmaster and every"
            " agent, readable only by the daemons' user (chmod 600); without it anyone reaching the port may send",
            example="/etc/fructosa/secret"),
        Key("tls", f"{prefix}.tls", parse_bool,
            "connect with TLS, verifying the other end with the system's CAs (implied by tls ca or tls cert)"
            + ("; the listening side ignores it" if server else "")),
        Key("tls cert", f"{prefix}.tls_cert", parse_existing_file,
            "this end's certificate (PEM)" + (": turns TLS on" if server else ", for an lmaster that asks for one"),
            example=f"/etc/fructosa/{own}.crt"),
        Key("tls key", f"{prefix}.tls_key", parse_existing_file, "the private key of tls cert",
            example=f"/etc/fructosa/{own}.key"),
        Key("tls ca", f"{prefix}.tls_ca", parse_existing_file,
            "require agents to present a certificate signed by this CA" if server
            else "verify lmaster's certificate (and that it was issued for host) with this CA",
            example="/etc/fructosa/ca.crt"),
    )  # fmt: skip


def link_check(prefix: str, server: bool) -> Callable[[SectionRead], None]:
    """Read the secret file now, so a problem with it is a start-up error, not a surprise at the
    first connection; refuse a certificate without its key."""

    def check(read: SectionRead) -> None:
        secret_file = read.values[f"{prefix}.secret_file"]
        if secret_file:
            try:
                secret, warning = auth.read_secret(secret_file)
            except OSError as error:
                raise read.error("secret file", error.strerror or str(error), secret_file) from None
            except ValueError as error:
                raise read.error("secret file", str(error), secret_file) from None
            if warning:
                read.file.warnings.append(warning)
            read.values[f"{prefix}.secret"] = secret
        cert, key = read.values[f"{prefix}.tls_cert"], read.values[f"{prefix}.tls_key"]
        if server and bool(cert) != bool(key):
            missing = "tls key" if cert else "tls cert"
            raise read.missing(missing, "TLS needs both tls cert and tls key")
        if not server and cert and not key:
            raise read.missing("tls key", "a client certificate needs its key")

    return check


def parse_spool_size(text: str) -> int:
    size = parse_size(text)
    if size < MIN_SPOOL_SIZE:
        raise ValueError("a spool needs at least 64K")
    return size


def spool_keys(directory: str, size: int, what: str) -> tuple[Key, ...]:
    """``spool dir`` and ``spool max size``; ``what``: what waits in the spool, for the doc."""
    return (
        Key("spool dir", "spool.directory", parse_path,
            f"disk spool: {what} wait here and survive a restart; the default, if unusable (not root, say),"
            " means a warning and memory-only buffering, a directory set here must be usable",
            default=directory, example=directory),
        Key("spool max size", "spool.max_bytes", parse_spool_size,
            "beyond this the oldest are dropped, counted and logged (bytes, or a number with K, M, G)",
            default=size, format=format_size),
    )  # fmt: skip


def mark_explicit_spool(read: SectionRead) -> None:
    read.values["spool.explicit"] = read.present and read.file.has(read.section, "spool dir")


LOGGING = Section(
    "logging",
    doc="Logging of the daemon; lagent and lmaster may share one file (each line names its program).",
    keys=(
        Key("filename", "logging.filename", parse_log_file,
            "the log file, rotated; None for no file (0.3.2's log file = None works too)",
            format=format_log_file, aliases=("log file",)),
        Key("maxBytes", "logging.max_bytes", parse_int, "rotate the file when it reaches this many bytes"),
        Key("backupCount", "logging.backup_count", parse_int, "rotated files kept"),
        Key("level", "logging.level", parse_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        Key("send to syslog", "logging.syslog", parse_bool, "also send the log lines to the local syslog (/dev/log)"),
    ),
)  # fmt: skip
