"""Reading a file against a :class:`~fructosa.config.schema.Schema` into its typed configuration.

Every declared section is read (absent ones give their defaults, except
optional ones, which leave their field alone), every key parsed by its
declaration; unknown sections and keys become warnings with the closest
declared name; then the checks across keys run and the nested configuration objects
are assembled from the ``{field path: value}`` mapping.
"""

from __future__ import annotations

from typing import Any

from .fields import NO_DEFAULT, assemble, field_default
from .reader import ConfigError, IniFile, did_you_mean
from .record import Record
from .schema import FROM_FIELD, NamedSection, Schema, Section, Variant


class SectionRead(Record):
    """One section's parsed values (by field path), for the checks across its keys and for ``build``."""

    file: IniFile
    section: str
    """As written in the file: ``qmaster`` where the file says so, for the messages."""
    values: dict[str, Any]
    present: bool = True

    def error(self, key: str, reason: str, value: str | None = None) -> ConfigError:
        """The one-line error about ``key``, quoting ``value`` or else what the file says."""
        if value is None:
            value = self.file.parser.get(self.section, key, fallback="") if self.present else ""
        return self.file.error(self.section, key, value, reason)

    def missing(self, key: str, reason: str) -> ConfigError:
        return self.file.missing(self.section, key, reason)


class NamedRead(SectionRead):
    """One ``[kind:NAME]`` section's parsed values, for its named section's ``build``."""

    name: str = ""


def load(schema: Schema, path: str) -> Any:
    """The program's configuration object (``schema.root``) from the file at ``path``."""
    file = IniFile(path)
    _classify_sections(file, schema)
    values: dict[str, Any] = {}
    for section in schema.sections:
        values.update(_read_section(file, schema.root, section))
    for named in schema.named:
        values[named.field] = _read_named(file, named)
    for check in schema.checks:
        check(file, values)
    return assemble(
        schema.root, {**values, "path": path, "warnings": tuple(file.warnings), "notices": tuple(file.notices)}
    )


def _classify_sections(file: IniFile, schema: Schema) -> None:
    """Report sections that belong to the other program; warn about unknown ones."""
    declared = {name for section in schema.sections for name in (section.name, *section.aliases)}
    prefixes = tuple(named.prefix for named in schema.named)
    for section in file.sections():
        foreign = next((foreign for foreign in schema.foreign if foreign.matches(section)), None)
        if foreign is not None:
            (file.notice if foreign.notice else file.warn)(f"[{section}] {foreign.reason}")
        elif section not in declared and not (prefixes and section.startswith(prefixes)):
            file.warn(f"unknown section [{section}] ignored{did_you_mean(section, list(schema.section_names()))}")


def _name_in_file(file: IniFile, section: Section) -> str | None:
    """The section's name as written (canonical first, then its aliases), or None when absent."""
    present = [name for name in (section.name, *section.aliases) if file.has(name)]
    for ignored in present[1:]:
        file.warn(f"both [{present[0]}] and [{ignored}]; [{ignored}] ignored")
    return present[0] if present else None


def _read_section(file: IniFile, root: type, section: Section) -> dict[str, Any]:
    name = _name_in_file(file, section)
    if name is None and section.optional_field:
        return {}
    if name is not None:
        file.warn_unknown_keys(name, section.keys)
    values = {}
    for key in section.keys:
        value = file.parse(name, key) if name is not None else key.default
        if value is FROM_FIELD:
            value = field_default(root, key.field)
        if value is not NO_DEFAULT:
            values[key.field] = value
    read = SectionRead(file, name or section.name, values, present=name is not None)
    for check in section.checks:
        check(read)
    return read.values


def _read_named(file: IniFile, named: NamedSection) -> tuple[Any, ...]:
    variants = named.all_variants()
    built = []
    for section in file.sections():
        if not section.startswith(named.prefix):
            continue
        name = section.removeprefix(named.prefix).strip()
        variant = variants.get(name) if variants is not None else Variant(name, "", ())
        if variant is None:
            file.warn(f"[{section}] invalid {named.kind} name; ignored{did_you_mean(name, list(variants or ()))}")
            continue
        keys = named.keys_of(variant)
        file.warn_unknown_keys(section, keys)
        values = {key.field: file.parse(section, key) for key in keys}
        built.append(named.build(NamedRead(file, section, values, name=name)))
    return tuple(built)
