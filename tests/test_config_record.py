"""config.record: declaration classes behave as the dataclasses they replace.

Each case builds the same declaration as a (frozen) dataclass and as a
:class:`Record`, and compares what a user of the class sees: construction
(positional, keyword, defaults, fresh mutable defaults), equality, hashing,
``repr``, refused assignment and the errors of a wrong call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from fructosa.config.record import Factory, FrozenRecord, Record
from fructosa.config.schema import Key, NamedSection, Variant
from fructosa.config.values import format_value, parse_int


def shout(text: str) -> str:
    return text.upper()


@dataclasses.dataclass(frozen=True)
class FrozenData:
    name: str
    parse: Any
    doc: str = ""
    format: Any = shout
    aliases: tuple[str, ...] = ()
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)


class FrozenPlain(FrozenRecord):
    name: str
    parse: Any
    doc: str = ""
    format: Any = shout
    aliases: tuple[str, ...] = ()
    defaults: dict[str, Any] = Factory(dict)


@dataclasses.dataclass
class MutableData:
    file: str
    values: dict[str, Any]
    present: bool = True


@dataclasses.dataclass
class MutableChildData(MutableData):
    name: str = ""


class MutablePlain(Record):
    file: str
    values: dict[str, Any]
    present: bool = True


class MutableChildPlain(MutablePlain):
    name: str = ""


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("a", int), {}),
    (("a", int, "doc"), {"aliases": ("b",)}),
    (("a",), {"parse": int, "format": str, "defaults": {"x": 1}}),
    ((), {"name": "a", "parse": int, "doc": "d", "format": None, "aliases": (), "defaults": {}}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_frozen_record_is_built_compared_hashed_and_shown_as_the_frozen_dataclass(args: tuple, kwargs: dict) -> None:
    data, plain = FrozenData(*args, **kwargs), FrozenPlain(*args, **kwargs)
    for field in dataclasses.fields(FrozenData):
        assert getattr(plain, field.name) == getattr(data, field.name)
    assert repr(plain).replace("FrozenPlain", "FrozenData") == repr(data)
    twin = FrozenPlain(*args, **kwargs)
    assert twin == plain and twin is not plain and not twin != plain
    assert plain != FrozenData(*args, **kwargs)  # another class: not equal, as between dataclasses
    assert plain != FrozenPlain("other", int)
    try:
        expected = hash(data)
    except TypeError:  # the dict field: unhashable, as the dataclass
        with pytest.raises(TypeError, match="unhashable"):
            hash(plain)
    else:
        assert hash(plain) == hash(twin) == expected
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'doc'"):
        plain.doc = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del plain.doc
    changed = dataclasses.replace(data, doc="new")
    assert repr(plain.replaced(doc="new")).replace("FrozenPlain", "FrozenData") == repr(changed)
    assert plain.doc == data.doc != "new"  # replaced left the original alone


def test_a_function_default_is_a_plain_value_and_mutable_defaults_are_fresh() -> None:
    first, second = FrozenPlain("a", int), FrozenPlain("b", int)
    assert first.format is shout and first.format("x") == "X"  # not a method bound to the object
    assert first.defaults == {} and first.defaults is not second.defaults
    assert "defaults" not in vars(FrozenPlain)  # no shared mutable default left on the class


def test_mutable_record_and_its_subclass_match_the_dataclasses() -> None:
    values: dict[str, Any] = {"k": 1}
    data, plain = MutableChildData("f", values, name="n"), MutableChildPlain("f", values, name="n")
    assert MutableChildPlain._fields == tuple(field.name for field in dataclasses.fields(MutableChildData))
    assert repr(plain).replace("Plain", "Data") == repr(data)
    assert plain == MutableChildPlain("f", {"k": 1}, True, "n")
    plain.present = False
    assert plain.present is False and plain != MutableChildPlain("f", {"k": 1}, True, "n")
    with pytest.raises(TypeError, match="unhashable"):
        hash(plain)
    assert MutablePlain("f", {}) != MutableChildPlain("f", {})


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {"parse": int}, "missing required argument: 'name'"),
        (("a", int), {"name": "b"}, "multiple values for argument 'name'"),
        (("a", int), {"colour": "red"}, "unexpected keyword argument 'colour'"),
        (("a", int, "", None, (), {}, "extra"), {}, "takes 6 arguments but 7 were given"),
    ],
)
def test_a_wrong_call_is_a_type_error_as_with_the_dataclass(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(TypeError):
        FrozenData(*args, **kwargs)
    with pytest.raises(TypeError, match=message):
        FrozenPlain(*args, **kwargs)


def test_schema_declarations_keep_their_fields_defaults_and_variant_defaults() -> None:
    key = Key("interval", "time_interval", parse_int, "seconds")
    assert (key.default, key.format, key.aliases, key.required, key.optional, key.view) == (
        key.default, format_value, (), "", False, None,
    )  # fmt: skip
    assert key == Key("interval", "time_interval", parse_int, "seconds") and key.names == ("interval",)
    assert hash(key) == hash(Key("interval", "time_interval", parse_int, "seconds"))
    named = NamedSection("sensor", "sensors", "Sensors.", build=lambda read: read, common_keys=(key,))
    (with_default,) = named.keys_of(Variant("CPU", "cpu", defaults={"time_interval": 5}))
    assert with_default.default == 5 and key.default is not with_default.default
    assert with_default == key.replaced(default=5) and with_default != key
