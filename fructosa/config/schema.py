"""The declarations every configuration key is made of, each key spelled once.

A :class:`Key` names one ``key = value`` of a section: its parser, its
default, a one-line doc and the field of the typed configuration it fills
(a dotted path from the program's configuration object, e.g. ``link.tls``).
Loading, unknown-key warnings, ``check``'s effective configuration and the
commented example files are all derived from these declarations.

Sections with a name (``[sensor:NAME]``) are a :class:`NamedSection`: their
keys may depend on the name (a sensor's options) and are looked up only when
a file is read, so declaring them imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .record import Factory, FrozenRecord
from .values import format_value

if TYPE_CHECKING:
    from .loader import NamedRead, SectionRead
    from .reader import IniFile

FROM_FIELD: Any = object()
"""Key default meaning: whatever the configuration class's field defaults to."""


class Key(FrozenRecord):
    """One ``key = value``: its name in the file and where its value goes."""

    name: str
    field: str
    """Dotted attribute path from the section's configuration object (``settings.X`` reaches into a dict)."""
    parse: Callable[[str], Any]
    doc: str
    default: Any = FROM_FIELD
    """The value when the key is absent; FROM_FIELD leaves it to the configuration class (a factory: hostname)."""
    format: Callable[[Any], str | None] = format_value
    """INI text of a value, None for unset (written ``#key =``); must read back through ``parse``."""
    example: str = ""
    """Shown commented out in the example file (a key unset by default, or one that means more when set)."""
    aliases: tuple[str, ...] = ()
    """Other names accepted for it; the first present wins (0.3.2's ``log file``)."""
    required: str = ""
    """Non-empty: the key must be in its section; this says why, in the error."""
    optional: bool = False
    """Left out of the printed configuration while unset (adaptive sampling's keys)."""
    view: Callable[[Any], Any] | None = None
    """What to print for it, from the configuration object ``field`` starts from, when not just ``field``."""

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.aliases, self.name)


class Section(FrozenRecord):
    """``[name]``: keys with fixed names."""

    name: str
    keys: tuple[Key, ...]
    doc: str
    aliases: tuple[str, ...] = ()
    """Older names of the section (``[qmaster]``); the canonical name wins when both are present."""
    optional_field: str = ""
    """Non-empty: absent means this field keeps its class default (None: no ``[upstream]``) and the
    section is commented out in the example; present means its keys' defaults apply."""
    checks: tuple[Callable[[SectionRead], None], ...] = ()
    """Checks across keys, once all are parsed; they may add values (the secret read from its file)."""


class Variant(FrozenRecord):
    """What one name of a named section accepts: ``[sensor:CPUPercent]`` takes ``percpu``."""

    name: str
    doc: str
    keys: tuple[Key, ...] = ()
    defaults: dict[str, Any] = Factory(dict)
    """Its own defaults of common keys, by field (each sensor's ``time_interval``)."""


class NamedSection(FrozenRecord):
    """``[kind:NAME]`` sections, any number of them, each built into one object.

    ``variants`` is called when a file is read (never at import): it returns
    the names allowed and the keys of each (an unknown name is a warning, with
    the closest one). ``common_keys`` are accepted by every name. ``build``
    makes the configuration object of one section from its parsed values
    (keyed by :attr:`Key.field`); the tuple of them goes to ``field`` of the
    program's configuration.
    """

    kind: str
    field: str
    doc: str
    build: Callable[[NamedRead], Any]
    variants: Callable[[], Mapping[str, Variant]] | None = None
    """None: any name is accepted, with ``common_keys`` only."""
    common_keys: tuple[Key, ...] = ()

    @property
    def prefix(self) -> str:
        return f"{self.kind}:"

    def keys_of(self, variant: Variant) -> tuple[Key, ...]:
        """The common keys (with the variant's defaults), its own keys, then the optional common keys."""
        common = [key.replaced(default=variant.defaults[key.field]) if key.field in variant.defaults else key
                  for key in self.common_keys]  # fmt: skip
        return (
            *(key for key in common if not key.optional),
            *variant.keys,
            *(key for key in common if key.optional),
        )

    def all_variants(self) -> Mapping[str, Variant] | None:
        """The variants (asking the registry now), or None when any name is accepted."""
        return self.variants() if self.variants is not None else None


class ForeignSection(FrozenRecord):
    """A section that belongs to the other program's file: accepted, not read, reported."""

    name: str
    """A section name, or a named section's prefix such as ``sensor:``."""
    reason: str
    notice: bool = False
    """A notice (logged at INFO, not a ``check`` problem) rather than a warning."""

    def matches(self, section: str) -> bool:
        return section.startswith(self.name) if self.name.endswith(":") else section == self.name


class Schema(FrozenRecord):
    """Everything one program's file may contain, in the order it is shown."""

    program: str
    root: type
    doc: str
    """What the file is, for the head of the example file."""
    sections: tuple[Section, ...]
    named: tuple[NamedSection, ...] = ()
    foreign: tuple[ForeignSection, ...] = ()
    checks: tuple[Callable[[IniFile, dict[str, Any]], None], ...] = ()
    """Checks across sections, called with the file and all values (named sections built) before assembly."""

    def section_names(self) -> Iterable[str]:
        for section in self.sections:
            yield section.name
            yield from section.aliases
        for foreign in self.foreign:
            if not foreign.name.endswith(":"):
                yield foreign.name
