"""Dotted field paths (``link.tls``) into the typed configuration classes.

Keys name the field they fill by such a path; these helpers find a field's
default, read a value back for printing, and build the nested frozen
objects from a flat ``{path: value}`` mapping, so no loader spells out a
constructor call field by field. The classes are records (lagent's
configuration, see :mod:`.record`) or dataclasses (lmaster's, ``LoggingConfig``):
both declare their fields as annotations in order, with class-level defaults.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

from .record import REQUIRED, Factory, Record

NO_DEFAULT: Any = object()
"""The field has no plain default: required, or made by a factory when the object is built."""


def _is_declaration(hint: Any) -> bool:
    return isinstance(hint, type) and (issubclass(hint, Record) or dataclasses.is_dataclass(hint))


def _defaults(cls: type) -> dict[str, Any]:
    """``{field name: default or NO_DEFAULT}`` of a record or dataclass, in declaration order."""
    if issubclass(cls, Record):
        return {
            name: NO_DEFAULT if default is REQUIRED or isinstance(default, Factory) else default
            for name, default in cls._defaults.items()
        }
    return {
        field.name: NO_DEFAULT if field.default is dataclasses.MISSING else field.default
        for field in dataclasses.fields(cls)
    }


def _declared_in(cls: type, name: str) -> Any:
    """``LinkConfig`` from the annotation ``LinkConfig`` or ``LinkConfig | None`` of field ``name`` of ``cls``
    (text under ``from __future__ import annotations``: each name looked up in the declaring class's module, as
    ``typing.get_type_hints`` would, without evaluating every annotation of the class); None for others."""
    owner = next((base for base in cls.__mro__ if name in vars(base).get("__annotations__", {})), None)
    if owner is None:
        return None
    annotation = vars(owner)["__annotations__"][name]
    if isinstance(annotation, str):
        names = vars(sys.modules[owner.__module__])
        candidates = [names.get(part.strip()) for part in annotation.split("|")]
    else:
        candidates = [annotation, *getattr(annotation, "__args__", ())]
    return next((hint for hint in candidates if _is_declaration(hint)), None)


def nested_class(cls: type, name: str) -> type:
    nested = _declared_in(cls, name) if name in _defaults(cls) else None
    if nested is None:
        raise TypeError(f"{cls.__name__}.{name} is not a configuration class")
    return nested


def field_default(cls: type, path: str) -> Any:
    """The default of the field at ``path`` below ``cls``, or NO_DEFAULT."""
    head, _, rest = path.partition(".")
    if rest:
        return field_default(nested_class(cls, head), rest)
    defaults = _defaults(cls)
    if head not in defaults:
        raise TypeError(f"{cls.__name__} has no field {head!r}")
    return defaults[head]


def value_at(obj: Any, path: str, past_none: Any = None) -> Any:
    """The value at ``path`` below ``obj`` (``settings.X`` reads a dict); ``past_none`` when a level above is None."""
    for name in path.split("."):
        if obj is None:
            return past_none
        obj = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name)
    return obj


def assemble(cls: type, values: Mapping[str, Any]) -> Any:
    """``cls`` built from ``{dotted path: value}``; fields not given keep their defaults."""
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, below in nested.items():
        direct[head] = assemble(nested_class(cls, head), below)
    return cls(**direct)
