"""Plain declaration classes that behave as (frozen) dataclasses, without their generated code.

``@dataclass`` compiles an ``__init__``, ``__repr__``, ``__eq__`` (and, frozen,
``__hash__``, ``__setattr__``, ``__delattr__``) from source text for every
class it decorates: one ``exec`` per method at import time. lagent imports a
dozen such classes only to read its configuration, and the compiler's work
and the code it leaves stay in the daemon's memory for its whole life
(~15 KB a class). A :class:`Record` subclass is declared the same way
(annotated fields in order, class-level defaults, :class:`Factory` for a
mutable default) and gets the same behaviour from one shared set of methods:
keyword or positional construction, ``repr``, equality and hashing by the
fields, and (:class:`FrozenRecord`) assignment refused with
:class:`dataclasses.FrozenInstanceError`.

Used for the configuration's own machinery (the schema's declarations, the
loader's section values, the command line's daemon descriptions), lagent's
typed configuration (``AgentConfig`` and the link and spool parts both daemons
share) and other small value classes on lagent's path (a sensor's options; adaptive.py stays
with dataclasses: the configuration imports it while this package is being
initialised; the spool's segments are plain slotted objects, the spool being
below the configuration). :func:`replace` copies a
record or a dataclass alike, and :mod:`.fields` reads either's declaration,
so code that handles both (lmaster's configuration, ``LoggingConfig``, stay
dataclasses) needs no second spelling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from typing import Any


class Factory:
    """A field's default made fresh for each object (``dataclasses.field(default_factory=...)``)."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


REQUIRED: Any = object()
"""The default of a field that has none (the caller must give it)."""


class Record:
    """Fields: the class's annotated names in order (a subclass's after its base's); defaults: their class values."""

    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = [name for name in cls.__dict__.get("__annotations__", {}) if name not in cls._fields]
        cls._fields = (*cls._fields, *own)
        cls._defaults = {
            name: cls.__dict__[name] if name in cls.__dict__ else cls._defaults.get(name, REQUIRED)
            for name in cls._fields
        }
        for name, default in cls._defaults.items():
            if isinstance(default, Factory):
                delattr(cls, name)  # no shared mutable object reachable as a class attribute

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments but {len(args)} were given")
        for name, value in zip(fields, args, strict=False):  # fewer args than fields: the rest below
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
            object.__setattr__(self, name, value)
        for name in fields[len(args) :]:
            if name in kwargs:
                value = kwargs.pop(name)
            else:
                value = self._defaults[name]
                if value is REQUIRED:
                    raise TypeError(f"{type(self).__name__}() missing required argument: {name!r}")
                if isinstance(value, Factory):
                    value = value.make()
            object.__setattr__(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def replaced(self, **changes: Any) -> Any:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return type(self)(**{**dict(zip(self._fields, self._values(), strict=True)), **changes})

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._values() == other._values()  # type: ignore[attr-defined]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, as a dataclass with eq

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({shown})"


class FrozenRecord(Record):
    """A :class:`Record` whose fields cannot be assigned once built; hashable by its fields."""

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash(self._values())


def replace(obj: Any, **changes: Any) -> Any:
    """A copy of ``obj`` with ``changes``: :meth:`Record.replaced` for a record, ``dataclasses.replace`` for a
    dataclass (lmaster's configuration, ``LoggingConfig``)."""
    if isinstance(obj, Record):
        return obj.replaced(**changes)
    return dataclasses.replace(obj, **changes)
