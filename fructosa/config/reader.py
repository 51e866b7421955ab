"""One INI file, read with one-line errors, and what reading it noticed."""

from __future__ import annotations

import configparser
from collections.abc import Iterable, Mapping
from typing import Any

from .schema import Key


class ConfigError(Exception):
    """A configuration the daemon refuses to run with; ``str()`` is one line."""


def did_you_mean(word: str, candidates: Iterable[str] | Mapping[str, str]) -> str:
    """`` (did you mean 'X'?)`` for the closest candidate, or nothing; a mapping's values are the spellings."""
    import difflib  # here: only a misspelt configuration needs it, and lagent keeps its modules for good

    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not close:
        return ""
    spelled = candidates[close[0]] if isinstance(candidates, Mapping) else close[0]
    return f" (did you mean {spelled!r}?)"


class IniFile:
    """A parsed file; ``warnings`` and ``notices`` collect harmless oddities for the log."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.parser = configparser.ConfigParser(interpolation=None)
        self.warnings: list[str] = []
        self.notices: list[str] = []
        try:
            with open(path, encoding="utf-8") as stream:
                self.parser.read_file(stream)
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except PermissionError:
            raise ConfigError(f"{path}: configuration file not readable (permission denied)") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, not a configuration file") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not a text file ({error.reason})") from None
        except configparser.Error as error:
            first_line = str(error).splitlines()[0].removeprefix(f"While reading from {path!r} ")
            line = getattr(error, "lineno", None)
            where = f" at line {line}" if line and "[line" not in first_line else ""
            raise ConfigError(f"{path}: malformed INI{where}: {first_line}") from None

    def sections(self) -> list[str]:
        return self.parser.sections()

    def has(self, section: str, key: str | None = None) -> bool:
        if key is None:
            return self.parser.has_section(section)
        return self.parser.has_option(section, key)

    def warn(self, message: str) -> None:
        self.warnings.append(f"{self.path}: {message}")

    def notice(self, message: str) -> None:
        self.notices.append(f"{self.path}: {message}")

    def error(self, section: str, key: str, value: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.path}: [{section}] {key} = {value!r}: {reason}")

    def missing(self, section: str, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.path}: [{section}] {key} is missing: {reason}")

    def warn_unknown_keys(self, section: str, keys: Iterable[Key]) -> None:
        """configparser lower-cases key names, so ``maxBytes`` and ``maxbytes`` are one key."""
        known = {name.lower(): name for key in keys for name in key.names}
        for option in self.parser.options(section):
            if option not in known:
                self.warn(f"[{section}] unknown key {option!r} ignored{did_you_mean(option, known)}")

    def parse(self, section: str, key: Key) -> Any:
        """The key's value from the file (the first of its names present), else its declared default."""
        for name in key.names:
            if self.parser.has_option(section, name):
                raw = self.parser.get(section, name)
                try:
                    return key.parse(raw)
                except ValueError as reason:
                    raise self.error(section, name, raw, str(reason)) from None
        if key.required:
            raise self.missing(section, key.name, key.required)
        return key.default
