"""What a sensor is, how it declares its options, and the one registry.

A sensor reads one psutil call and *shapes* its output into plain nested
dicts of numbers (see :mod:`fructosa.graphite_paths` for how those become
paths). Reading and shaping are separate so the golden tests can feed
recorded psutil output to ``shape`` and check the resulting paths.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, ClassVar

from ..config.record import FrozenRecord
from ..config.sensor_sections import TIME_INTERVAL
from ..config.values import format_value, parse_bool, parse_positive_float, parse_positive_int, parse_word_list


class SensorUnsupported(Exception):
    """This host cannot provide the sensor's data (no battery, no fans…)."""


PARSERS: dict[type, Callable[[str], Any]] = {
    bool: parse_bool,
    float: parse_positive_float,
    int: parse_positive_int,
    tuple: parse_word_list,
    str: str.strip,
}


class Option(FrozenRecord):
    """One ``key = value`` a sensor accepts in its ``[sensor:NAME]`` section."""

    key: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()

    def parse(self, text: str) -> Any:
        value = PARSERS[self.type](text)
        if self.choices and value not in self.choices:
            raise ValueError(f"{text!r} is not one of {', '.join(self.choices)}")
        return value

    def format_default(self) -> str:
        return format_value(self.default) or ""


NO_SAMPLE = None
"""What ``shape()`` and ``measure()`` return when there is nothing to send yet
(a rate's first reading): the agent then records nothing."""


class Sensor:
    """Base class: subclasses set the class attributes and implement read/shape.

    ``description`` is one line for ``lagent sensors``; the class docstring
    may say more. ``options`` lists the keys of its config section besides
    ``time_interval``; their parsed values are in ``self.settings``.

    Three outcomes of :meth:`measure`:

    * a value (nested dict or number): the sample, sent;
    * ``None`` (:data:`NO_SAMPLE`): nothing to send this time, and the agent
      records nothing. A sensor says so by returning ``None`` from
      ``shape()``; a rate does on its first reading after a start or reload,
      which only takes its reference (sending 0 or a rate over a random
      window would be a wrong figure);
    * :class:`SensorUnsupported` raised: this host cannot measure it (also
      when ``read()`` returns ``None``); the agent idles the sensor.

    Rates over time (CPU %, bytes per second) keep their previous reading on
    the instance and rate over exactly the time since the sensor's own
    previous sample. One instance is measured by one call at a time, but the
    agent runs each call on the event loop or on whichever worker thread is
    free, so nothing may depend on the calling thread (psutil's non-blocking ``cpu_percent()``
    and ``cpu_times_percent()`` do: they are not used).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    default_interval: ClassVar[float] = 60.0
    options: ClassVar[tuple[Option, ...]] = ()
    blocking: ClassVar[bool] = True
    """Whether ``start()`` and ``measure()`` may block for long (a hung NFS mount,
    a command, a network request, a walk over every process): the agent then
    runs them on a worker thread of their own, so they stall only this sensor.
    A sensor that only reads kernel counters from /proc or /sys sets it false
    and is measured on the agent's event loop with the others due at the same
    instant, without a thread hop (the cheap, quiet path)."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = {option.key: option.default for option in self.options}
        self.settings.update(settings or {})

    def start(self) -> None:
        """Called once before the first measure (on a worker thread if ``blocking``), e.g. to load a library.

        Not for priming rates: a reference taken here would make the first
        rate span only the moment until the first measure."""

    def may_block(self) -> bool:
        """Whether this instance, as configured, may block (asked once, after ``start()``):
        the class's ``blocking`` unless its settings tell more (DiskUsage on local disks)."""
        return self.blocking

    def read(self) -> Any:
        """The raw psutil output (runs on a worker thread if the sensor may block)."""
        raise NotImplementedError

    def shape(self, raw: Any) -> Any:
        """Plain nested dict (or number) from :func:`as_plain` of ``read()``;
        ``None`` (:data:`NO_SAMPLE`) when there is nothing to send yet."""
        return raw

    def measure(self) -> Any:
        """One sample, or ``None`` (:data:`NO_SAMPLE`): nothing to send this time."""
        raw = self.read()
        if raw is None:
            raise SensorUnsupported(f"psutil returned no data for {self.name}")
        return self.shape(as_plain(raw))

    one_tuple: ClassVar[bool] = False
    """Whether ``read()`` returns one psutil namedtuple whose plain form is the sample
    as it is (``shape`` keeps it): :meth:`measure_compact` then returns the tuple."""

    def measure_compact(self) -> Any:
        """What the agent records every tick: :meth:`measure`'s sample, or psutil's own
        namedtuple where that sample is just the tuple's fields in order (:func:`as_plain`
        of it). The agent takes such a tuple's numbers straight into its block, without the
        dict of every field that ``measure`` builds and the agent would only take apart again."""
        if not self.one_tuple:
            return self.measure()
        raw = self.read()
        if raw is None:
            raise SensorUnsupported(f"psutil returned no data for {self.name}")
        return raw

    def compact_reader(self) -> Callable[[], Any]:
        """What the agent calls every tick for :meth:`measure_compact`'s sample, asked once after
        ``start()``: that method, or, where the sample is one psutil call's namedtuple as it is and
        that call never answers None (it raises where it cannot measure), the psutil call itself.
        At one tick a second none of the code is in the CPU's caches, and each method between the
        agent and psutil is one more to fetch."""
        return self.measure_compact

    @classmethod
    def sample_section(cls) -> str:
        """An example ``[sensor:NAME]`` section with every option at its default."""
        lines = [f"[sensor:{cls.name}]", f"{TIME_INTERVAL} = {cls.default_interval:g}"]
        lines += [f"{option.key} = {option.format_default()}" for option in cls.options]
        return "\n".join(lines)


REGISTRY: dict[str, type[Sensor]] = {}


def register(cls: type[Sensor]) -> type[Sensor]:
    """Class decorator: make the sensor available under its class name."""
    cls.name = cls.__name__
    if cls.name in REGISTRY:
        raise RuntimeError(f"sensor {cls.name} registered twice")
    REGISTRY[cls.name] = cls
    return cls


_SCALARS = frozenset({int, float, str, bool, type(None)})
"""Types :func:`as_plain` returns as they are: most of psutil's values (the fast path)."""


def as_plain(obj: Any) -> Any:
    """psutil output as plain data: namedtuples → dicts, enums → their names.

    Recorded golden inputs are stored in this form (JSON), so shaping code
    sees the same thing whether the data is live or recorded.
    """
    kind = type(obj)
    if kind in _SCALARS:
        return obj
    if isinstance(obj, tuple):
        fields = getattr(obj, "_fields", None)
        if fields is not None:  # a namedtuple: mostly plain numbers
            if _SCALARS.issuperset(map(type, obj)):  # all of them: one C-level pass
                return dict(zip(fields, obj, strict=True))
            return {
                key: value if type(value) in _SCALARS else as_plain(value)
                for key, value in zip(fields, obj, strict=True)
            }
        return [as_plain(value) for value in obj]
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, dict):
        return {key: as_plain(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [as_plain(value) for value in obj]
    return obj
