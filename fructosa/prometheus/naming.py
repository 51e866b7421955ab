"""Graphite paths → Prometheus series: the one naming rule of ``/metrics``.

A path ``HOST.SENSOR.KEY…`` becomes the series
``fructosa_<sensor in snake_case>_<the keys that are names, joined by _>``
with the label ``host="HOST"``; keys that are *instances* (a CPU, a disk, an
interface, a mount point, a Slurm job, a GPU, a rank…) become labels::

    node01.VirtualMemory.percent    -> fructosa_virtual_memory_percent{host="node01"}
    node01.CPUPercent.3             -> fructosa_cpu_percent{host="node01",cpu="3"}
    node01.CPUTimes.cpu2.user       -> fructosa_cpu_times_user_total{host="node01",cpu="2"}
    node01.DiskUsage.home.free      -> fructosa_disk_usage_free{host="node01",mount="home"}

Which keys are instances is declared per sensor in :data:`RULES`, from the
path shapes the sensors send (their docstrings and the golden cases of
``tests/sensors/testcases``): a list of *shapes*, the first that fits wins.
A shape is dot-separated parts:

* ``*`` — one key that is a name (goes into the metric name);
* ``**`` — the remaining keys, all names (one or more);
* ``{label}`` — one key that is an instance: the label's value;
* ``prefix{label:REGEX}`` — an instance key written ``prefix`` + value
  (``cpu{cpu:[0-9]+}`` reads ``cpu3`` as ``cpu="3"``);
* ``-word`` — the literal key ``word``, left out of the name: an aggregate
  over instances (``CPUPercent.total`` is ``fructosa_cpu_percent`` without a
  ``cpu`` label: select it with ``{cpu=""}``).

A path that fits no shape of its sensor (or of an unknown sensor) keeps all its
keys in the name. Sensors that count since boot are Prometheus *counters*
(``_total`` appended, :attr:`Rule.counters`), everything else gauges. The
metric's ``# HELP`` is the sensor's ``description``. Series of the
``Prometheus`` sensor (``HOST.Prometheus.METRIC.LABEL.VALUE…``, scraped from
exporters) get their own name and labels back, untyped, plus ``host``
(a scraped ``host`` label becomes ``exported_host``, as Prometheus does).
lmaster's own health is ``fructosa_lmaster_*`` (:func:`lmaster_series`).

:func:`rule_table` writes this rule as the README's table; a test keeps the
two equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

PREFIX = "fructosa"
COUNTER, GAUGE, UNTYPED = "counter", "gauge", "unknown"
"""Metric types as prometheus-client names them (``unknown`` is written ``untyped`` in the text format)."""

_PART = re.compile(r"^(?P<prefix>[A-Za-z_]*)\{(?P<label>[a-z_]+)(?::(?P<regex>[^}]+))?\}$")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """``CPUTimesPercent`` → ``cpu_times_percent``, ``NetIFAddrs`` → ``net_if_addrs``."""
    return _CAMEL.sub("_", name).lower()


def metric_name_part(text: str) -> str:
    """A path component as part of a Prometheus metric name: ``[A-Za-z0-9_]`` only (``-`` becomes ``_``)."""
    return _NOT_NAME.sub("_", text)


@dataclass(frozen=True)
class Rule:
    """How one sensor's paths become series: its shapes, and which of them are counters."""

    shapes: tuple[str, ...] = ("**",)
    counters: bool | frozenset[str] = False
    """True: every series of the sensor is a counter; a set: the metric-name suffixes that are."""
    name: str | None = None
    """The metric name's stem; default ``fructosa_<sensor in snake_case>``."""
    help: str | None = None
    """``# HELP``; default the sensor's description."""
    compiled: tuple[tuple[tuple, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", tuple(_compile(shape) for shape in self.shapes))

    def is_counter(self, name_parts: tuple[str, ...]) -> bool:
        if isinstance(self.counters, bool):
            return self.counters
        return "_".join(name_parts) in self.counters


def _compile(shape: str) -> tuple[tuple, ...]:
    parts: list[tuple] = []
    for index, text in enumerate(shape.split(".") if shape else ()):
        if text == "*":
            parts.append(("name",))
        elif text == "**":
            if index != len(shape.split(".")) - 1:
                raise ValueError(f"** must be the last part of a shape: {shape!r}")
            parts.append(("rest",))
        elif text.startswith("-"):
            parts.append(("drop", text[1:]))
        elif match := _PART.match(text):
            regex = re.compile(match["regex"] or ".+")
            parts.append(("label", match["prefix"], match["label"], regex))
        else:
            parts.append(("literal", text))
    return tuple(parts)


def _match(parts: tuple[tuple, ...], keys: list[str]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]] | None:
    """(name parts, labels) when ``keys`` has this shape, else None."""
    names: list[str] = []
    labels: list[tuple[str, str]] = []
    for index, part in enumerate(parts):
        kind = part[0]
        if kind == "rest":
            if index >= len(keys):
                return None
            names.extend(keys[index:])
            return tuple(names), tuple(labels)
        if index >= len(keys):
            return None
        key = keys[index]
        if kind == "name":
            names.append(key)
        elif kind == "literal":
            if key != part[1]:
                return None
            names.append(key)
        elif kind == "drop":
            if key != part[1]:
                return None
        else:
            _, prefix, label, regex = part
            if not key.startswith(prefix) or not regex.fullmatch(key[len(prefix) :]):
                return None
            labels.append((label, key[len(prefix) :]))
    if len(keys) != len(parts):
        return None
    return tuple(names), tuple(labels)


ALL_NAMES = Rule()
PER_CPU = ("cpu{cpu:[0-9]+}.*", "*")

RULES: dict[str, Rule] = {
    "BootTime": Rule(("",)),
    "CPUCount": Rule(("",)),
    "CPUFreq": Rule(PER_CPU),
    "CPUPercent": Rule(("{cpu:[0-9]+}", "-total")),
    "CPUStats": Rule(("*",), counters=True),
    "CPUTimes": Rule(PER_CPU, counters=True),
    "CPUTimesPercent": Rule(PER_CPU),
    "DiskIOCounters": Rule(("{disk}.*", "*"), counters=True),
    "DiskPartitions": Rule(("fstype.{fstype}", "*")),
    "DiskUsage": Rule(("{mount}.*", "*")),
    "GPU": Rule(("{gpu}.jobs.{slot:[0-9]+}.*", "{gpu}.mig.{mig:[0-9]+}.**", "{gpu}.**")),
    "NetConnections": Rule(("*", "{protocol}.count", "{protocol}.{state}")),
    "NetIFAddrs": Rule(("{interface}.*",)),
    "NetIFStats": Rule(("{interface}.*",)),
    "NetIOCounters": Rule(("{interface}.*", "*"), counters=True),
    "SensorsBattery": Rule(("*",)),
    "SensorsFans": Rule(("{chip}.{fan}",)),
    "SensorsTemperatures": Rule(("{chip}.{sensor}.*",)),
    "SlurmJobs": Rule(("job_{job_id:[0-9]+}.*", "*")),
    "SwapMemory": Rule(("*",), counters=frozenset({"sin", "sout"})),
    "TopProcesses": Rule(("*.rank_{rank:[0-9]+}.who.{user}.{process}", "*.rank_{rank:[0-9]+}.*", "*")),
    "Users": Rule(("per_user.{user}", "*")),
    "VirtualMemory": Rule(("*",)),
    "fructosa": Rule(
        ("agent.interval.{sensor}", "agent.*", "*"),
        name=PREFIX,
        help="the agent's own health, and lmaster's view of it (up: 1 while connected and heard from)",
    ),  # fmt: skip
}
"""Per sensor: the shapes of its paths below ``HOST.SENSOR`` (see the module docstring)."""

PROMETHEUS_SENSOR = "Prometheus"


@dataclass(frozen=True)
class Series:
    """One Prometheus series: metric (family) name, type, help, and labels (``host`` first)."""

    name: str
    type: str
    help: str
    labels: tuple[tuple[str, str], ...]

    @property
    def family(self) -> tuple[str, str, str]:
        """What series of one metric family share: name, type, help."""
        return self.name, self.type, self.help


def sensor_help(sensor: str) -> str:
    """The sensor's one-line description (``# HELP``), or a generic line for sensors this lmaster does not know."""
    rule = RULES.get(sensor)
    if rule is not None and rule.help:
        return rule.help
    from ..sensors import REGISTRY  # late: lmaster needs the registry only when it serves /metrics

    cls = REGISTRY.get(sensor)
    return cls.description if cls is not None else f"FrUCToSA sensor {sensor}"


@lru_cache(maxsize=1 << 16)
def relative_series(relative: str) -> tuple[str, str, str, tuple[tuple[str, str], ...]] | None:
    """``(name, type, help, labels)`` of a path below its host (``CPUPercent.3``); cached, hosts share them.

    None for a path that cannot be a series (no sensor).
    """
    sensor, _, rest = relative.partition(".")
    if not sensor:
        return None
    keys = rest.split(".") if rest else []
    if sensor == PROMETHEUS_SENSOR and keys:
        return _scraped_series(keys)
    rule = RULES.get(sensor, ALL_NAMES)
    found = None
    for parts in rule.compiled:
        found = _match(parts, keys)
        if found is not None:
            break
    names, labels = found if found is not None else (tuple(keys), ())
    stem = rule.name or f"{PREFIX}_{snake_case(metric_name_part(sensor))}"
    name = "_".join([stem, *(metric_name_part(part) for part in names)])
    kind = COUNTER if rule.is_counter(names) else GAUGE
    return name, kind, sensor_help(sensor), labels


def _scraped_series(keys: list[str]) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    """``METRIC.LABEL.VALUE…`` (the Prometheus sensor's paths) back into the exporter's series."""
    name = metric_name_part(keys[0])
    if name[0].isdigit():
        name = "_" + name
    pairs = keys[1:]
    help_text = "scraped by the Prometheus sensor from a local exporter"
    labels = []
    for index in range(0, len(pairs) - 1, 2):
        label = metric_name_part(pairs[index])
        if label[0].isdigit():
            label = "_" + label
        labels.append(("exported_host" if label == "host" else label, pairs[index + 1]))
    if len(pairs) % 2 or len({label for label, _ in labels}) < len(labels):
        # not the sensor's label pairs (a label twice cannot be a series): keep everything in the name
        return "_".join([name, *map(metric_name_part, pairs)]), UNTYPED, help_text, ()
    return name, UNTYPED, help_text, tuple(labels)


def series_of(path: str) -> Series | None:
    """The Prometheus series of a Graphite path ``HOST.SENSOR.KEY…``; None when it has no sensor."""
    host, _, relative = path.partition(".")
    found = relative_series(relative) if host else None
    if found is None:
        return None
    name, kind, help_text, labels = found
    return Series(name, kind, help_text, (("host", host), *labels))


# -- lmaster's own health ------------------------------------------------------------------------------

LMASTER_COUNTERS = frozenset(
    {"connections_rejected", "batches_duplicate", "samples_malformed", "datapoints_in", "datapoints_refused"}
)
LMASTER_SINK_GAUGES = frozenset({"queued", "spool_batches", "unacknowledged_frames"})
"""Sink statistics that go up and down; every other one counts since lmaster started."""


def lmaster_series(key: str) -> Series:
    """The series of one of lmaster's self-metrics, named as its report names them.

    ``datapoints_in`` → ``fructosa_lmaster_datapoints_in_total``; a sink's
    ``SINK.sent`` → ``fructosa_lmaster_sink_sent_total{sink="SINK"}``; a
    carbon cluster's ``SINK.DESTINATION.sent`` adds ``destination``.
    """
    parts = key.split(".")
    stem = f"{PREFIX}_lmaster"
    if len(parts) == 1:
        kind = COUNTER if key in LMASTER_COUNTERS else GAUGE
        return Series(f"{stem}_{metric_name_part(key)}", kind, f"lmaster's {key.replace('_', ' ')}", ())
    labels = [("sink", parts[0])] + ([("destination", ".".join(parts[1:-1]))] if len(parts) > 2 else [])
    field_name = parts[-1]
    kind = GAUGE if field_name in LMASTER_SINK_GAUGES else COUNTER
    return Series(
        f"{stem}_sink_{metric_name_part(field_name)}", kind, f"lmaster's sinks: {field_name.replace('_', ' ')}",
        tuple(labels),
    )  # fmt: skip


def exposed_name(series: Series) -> str:
    """The name as written in the exposition: counters get ``_total``."""
    return f"{series.name}_total" if series.type == COUNTER else series.name


# -- the README's table ----------------------------------------------------------------------------------


def _example(sensor: str, shape: str) -> str:
    keys = []
    for part in _compile(shape):
        if part[0] in ("name", "rest"):
            keys.append("FIELD")
        elif part[0] in ("literal", "drop"):
            keys.append(part[1])
        else:
            keys.append(f"{part[1]}{part[2].upper()}")
    return ".".join(["HOST", sensor, *keys])


def _series_text(sensor: str, shape: str, rule: Rule) -> str:
    names: list[str] = []
    labels = ['host="HOST"']
    for part in _compile(shape):
        if part[0] in ("name", "rest"):
            names.append("FIELD")
        elif part[0] == "literal":
            names.append(part[1])
        elif part[0] == "label":
            labels.append(f'{part[2]}="{part[2].upper()}"')
    stem = rule.name or f"{PREFIX}_{snake_case(sensor)}"
    name = "_".join([stem, *names])
    if rule.counters is True:
        name += "_total"
    return f"{name}{{{','.join(labels)}}}"


def rule_table(rules: dict[str, Rule] | None = None) -> str:
    """The naming rule as a Markdown table (the README's), one row per shape."""
    rows = ["| Graphite path | Prometheus series | type |", "| --- | --- | --- |"]
    for sensor, rule in sorted((rules or RULES).items(), key=lambda item: item[0].lower()):
        kind = "counter" if rule.counters is True else "gauge" if not rule.counters else (
            f"counter for {', '.join(sorted(rule.counters))}, else gauge"
        )  # fmt: skip
        for shape in rule.shapes:
            rows.append(f"| `{_example(sensor, shape)}` | `{_series_text(sensor, shape, rule)}` | {kind} |")
    rows.append('| `HOST.Prometheus.METRIC.LABEL.VALUE…` | `METRIC{host="HOST",LABEL="VALUE",…}` | untyped |')
    rows.append("| lmaster's self-metric `KEY` / `SINK.KEY` | `fructosa_lmaster_KEY` / "
                '`fructosa_lmaster_sink_KEY{sink="SINK"}` | counter for counts, else gauge |')  # fmt: skip
    return "\n".join(rows)
