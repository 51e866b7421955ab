"""Value parsers and formatters for configuration files: text ↔ typed values.

The bottom layer of the configuration (standard library only), shared by the
daemons' sections and by the sensors' own options. A parser raises
``ValueError`` with a short reason; the caller adds file, section, key and
value to make the one-line error. :func:`format_value` writes a value back so
that the same parser reads it again unchanged.
"""

from __future__ import annotations

import os
from typing import Any

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
NO_FILE = ("none", "no", "off", "")
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (yes/no, true/false, on/off, 1/0)")


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("not an integer") from None


def parse_positive_int(text: str) -> int:
    """A count such as ``max connections`` or a sensor's ``count``: at least 1."""
    value = parse_int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _parse_float(text: str, what: str = "a number") -> float:
    """``text`` as a float; the ValueError says what it should have been (the parsers below add their bounds)."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {what}") from None


def parse_positive_float(text: str) -> float:
    """Seconds (fractions allowed): finite and above zero."""
    value = _parse_float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{text!r} is not a number of seconds > 0")
    return value


def parse_port(text: str) -> int:
    port = parse_int(text)
    if not 1 <= port <= 65535:
        raise ValueError("not a TCP port (1-65535)")
    return port


def parse_size(text: str) -> int:
    """Bytes from ``1048576``, ``512K``, ``64M``, ``1G`` (powers of 1024)."""
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = cleaned, ""
    if cleaned and cleaned[-1] in SIZE_UNITS:
        number, unit = cleaned[:-1], cleaned[-1]
    try:
        return int(float(number) * SIZE_UNITS[unit])
    except ValueError:
        raise ValueError("not a size (bytes, or a number with K, M, G)") from None


def parse_path(text: str) -> str:
    path = text.strip()
    if not path:
        raise ValueError("empty path")
    return os.path.abspath(path)


def parse_existing_file(text: str) -> str:
    path = parse_path(text)
    if not os.path.isfile(path):
        raise ValueError("no such file")
    if not os.access(path, os.R_OK):
        raise ValueError("file not readable (permission denied)")
    return path


def parse_log_file(text: str) -> str | None:
    """A log file name, or None for none at all (0.3.2's ``log file = None``)."""
    name = text.strip()
    return None if name.lower() in NO_FILE else name


def parse_host(text: str) -> str:
    """A host name or address (also used for command names: one word)."""
    host = text.strip()
    if not host or any(char.isspace() for char in host):
        raise ValueError("not a host name or address")
    return host


def parse_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"not a log level ({', '.join(LOG_LEVELS)})")
    return level


def parse_http_url(text: str) -> str:
    url = text.strip()
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1].strip("/")) == 0:
        raise ValueError("not an http:// or https:// URL")
    return url


def parse_word_list(text: str) -> tuple[str, ...]:
    """Whitespace- or comma-separated words, e.g. mount points or NIC names."""
    words = tuple(word for word in text.replace(",", " ").split() if word)
    if not words:
        raise ValueError("empty list")
    return words


def format_value(value: Any) -> str | None:
    """INI text of a parsed value; None (unset) stays None for the caller to comment out."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def format_size(size: int | None) -> str | None:
    """``64M`` rather than ``67108864`` when the size is a whole number of a unit."""
    if size is None:
        return None
    for unit, factor in reversed(SIZE_UNITS.items()):
        if factor > 1 and size % factor == 0 and size >= factor:
            return f"{size // factor}{unit}"
    return str(size)


def format_log_file(name: str | None) -> str:
    return "None" if name is None else name


def parse_fraction(text: str) -> float:
    """A share such as a job's idle CPU fraction: above 0, at most 1."""
    value = parse_positive_float(text)
    if value > 1:
        raise ValueError("a fraction between 0 and 1")
    return value


def parse_seconds(text: str) -> float:
    """Seconds, 0 allowed (``for = 0``: fire at once)."""
    value = _parse_float(text, "a number of seconds")
    if not 0 <= value <= 30 * 86400:
        raise ValueError("seconds between 0 and 30 days")
    return value


def parse_number(text: str) -> float:
    """A threshold: any finite number."""
    value = _parse_float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value
