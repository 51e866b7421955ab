"""Dotted field paths (``link.tls``) into the typed configuration dataclasses.

Keys name the field they fill by such a path; these helpers find a field's
default, read a value back for printing, and build the nested frozen
dataclasses from a flat ``{path: value}`` mapping, so no loader spells out a
constructor call field by field.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

NO_DEFAULT: Any = object()
"""The field has no plain default: required, or made by a factory when the object is built."""


def _dataclass_in(cls: type, name: str, annotation: Any) -> type | None:
    """``LinkConfig`` from the annotation ``LinkConfig`` or ``LinkConfig | None`` of field ``name`` of ``cls``
    (text under ``from __future__ import annotations``: each name looked up in the declaring class's module, as
    ``typing.get_type_hints`` would, without evaluating every annotation of the class); None for others."""
    if isinstance(annotation, str):
        owner = next(base for base in cls.__mro__ if annotation is vars(base).get("__annotations__", {}).get(name))
        names = vars(sys.modules[owner.__module__])
        candidates = [names.get(part.strip()) for part in annotation.split("|")]
    else:
        candidates = [annotation, *getattr(annotation, "__args__", ())]
    return next((hint for hint in candidates if isinstance(hint, type) and dataclasses.is_dataclass(hint)), None)


def nested_class(cls: type, name: str) -> type:
    field = next((field for field in dataclasses.fields(cls) if field.name == name), None)
    nested = None if field is None else _dataclass_in(cls, name, field.type)
    if nested is None:
        raise TypeError(f"{cls.__name__}.{name} is not a configuration dataclass")
    return nested


def field_default(cls: type, path: str) -> Any:
    """The default of the field at ``path`` below ``cls``, or NO_DEFAULT."""
    head, _, rest = path.partition(".")
    if rest:
        return field_default(nested_class(cls, head), rest)
    field = next((field for field in dataclasses.fields(cls) if field.name == head), None)
    if field is None:
        raise TypeError(f"{cls.__name__} has no field {head!r}")
    return NO_DEFAULT if field.default is dataclasses.MISSING else field.default


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
