"""Dotted field paths (``link.tls``) into the typed configuration dataclasses.

Keys name the field they fill by such a path; these helpers find a field's
default, read a value back for printing, and build the nested frozen
dataclasses from a flat ``{path: value}`` mapping, so no loader spells out a
constructor call field by field.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any

NO_DEFAULT: Any = object()
"""The field has no plain default: required, or made by a factory when the object is built."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_in(hint: Any) -> type | None:
    """``LinkConfig`` from ``LinkConfig`` or ``LinkConfig | None``; None for other types."""
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next((arg for arg in typing.get_args(hint) if dataclasses.is_dataclass(arg)), None)
    return None


def nested_class(cls: type, name: str) -> type:
    nested = _dataclass_in(_hints(cls).get(name))
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
