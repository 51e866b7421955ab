"""The effective configuration as INI text: every key of every section, defaults filled in.

``lagent check`` / ``lmaster check`` print it; loading the text again gives
the same configuration, because each value is written by its key's formatter
for its key's parser.
"""

from __future__ import annotations

from typing import Any

from .fields import NO_DEFAULT, field_default, value_at
from .schema import FROM_FIELD, Key, NamedSection, Schema, Section, Variant


def ini_line(name: str, text: str | None) -> str:
    """``name = text``, or ``#name =`` for a key left unset."""
    return f"#{name} =" if text is None else f"{name} = {text}"


def ini_block(header: str, lines: list[str]) -> str:
    return "\n".join([f"[{header}]", *lines]) + "\n"


def declared_default(root: type | None, key: Key) -> Any:
    """The value an absent key gets; None where the configuration class makes it (hostname) or has none.

    ``root`` is the class ``key.field`` starts from, needed only for FROM_FIELD defaults."""
    if key.default is not FROM_FIELD:
        return key.default
    default = field_default(root, key.field) if root is not None else NO_DEFAULT
    return None if default is NO_DEFAULT else default


def _shown(root: type, obj: Any, key: Key) -> Any:
    if key.view is not None:
        return key.view(obj)
    return value_at(obj, key.field, past_none=declared_default(root, key))


def _lines(root: type, obj: Any, keys: tuple[Key, ...]) -> list[str]:
    lines = []
    for key in keys:
        value = _shown(root, obj, key)
        if value is None and key.optional:
            continue
        lines.append(ini_line(key.name, key.format(value)))
    return lines


def _is_shown(schema: Schema, cfg: Any, section: Section) -> bool:
    """An optional section is shown when it was configured (its field is not at its default)."""
    if not section.optional_field:
        return True
    return value_at(cfg, section.optional_field) != field_default(schema.root, section.optional_field)


def _named_blocks(named: NamedSection, built: tuple[Any, ...]) -> list[str]:
    variants = named.all_variants() or {}
    blocks = []
    for item in built:
        keys = named.keys_of(variants.get(item.name) or Variant(item.name, ""))
        blocks.append(ini_block(f"{named.prefix}{item.name}", _lines(type(item), item, keys)))
    return blocks


def effective_ini(schema: Schema, cfg: Any) -> str:
    """The whole configuration with every default filled in; loading it gives ``cfg`` again."""
    blocks = [
        ini_block(section.name, _lines(schema.root, cfg, section.keys))
        for section in schema.sections
        if _is_shown(schema, cfg, section)
    ]
    for named in schema.named:
        blocks += _named_blocks(named, value_at(cfg, named.field))
    return "\n".join(blocks)
