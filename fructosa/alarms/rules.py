"""Alarm rules: what one rule says, how it is checked, and its state machine, as pure functions.

A rule compares the newest value of Graphite series with a threshold.
Its ``metric`` is a Graphite glob whose first component is the node
(``*.CPUPercent.total``, ``node0[1-4].VirtualMemory.percent``,
``*.SlurmJobs.job_*.cpu_percent``); its ``target`` says what one state is
about:

* ``node``: one state per node, which holds when any matching series of the
  node holds;
* ``cluster-mean`` / ``cluster-max`` / ``cluster-sum``: one state for the
  whole cluster, over the newest value of every matching series;
* ``job``: one state per Slurm job (for series below ``SlurmJobs.job_*``),
  over the sum of the job's series on all its nodes (CPU use and memory add
  up across nodes).

A state goes ok → pending (condition holds, waiting ``for`` seconds) →
firing → resolved (condition no longer holds) → pending … Nothing here
does I/O or keeps time: the evaluator feeds values and the clock in.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
TARGETS = ("node", "cluster-mean", "cluster-max", "cluster-sum", "job")
CLUSTER_TARGETS = ("cluster-mean", "cluster-max", "cluster-sum")
SEVERITIES = ("info", "warning", "critical")
STATES = ("ok", "pending", "firing", "resolved")
CLUSTER_KEY = "cluster"
"""The one state key of a cluster rule."""

NODE_SILENT = "node-silent"
JOB_IDLE = "job-idle"
BUILTIN_NAMES = (NODE_SILENT, JOB_IDLE)

MAX_NAME_LENGTH = 100
MAX_METRIC_LENGTH = 300
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_GLOB_COMPONENT = re.compile(r"[A-Za-z0-9_\-*?\[\]{},!]+")
JOB_COMPONENT = re.compile(r"job_([0-9]+)")


class RuleError(ValueError):
    """A rule that cannot be: ``field`` names the offending field, ``str()`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


@dataclass(frozen=True)
class Rule:
    """One alarm; ``origin`` says where it was declared (config, api, builtin)."""

    name: str
    metric: str
    operator: str
    value: float
    for_seconds: float = 0.0
    target: str = "node"
    severity: str = "warning"
    action: str | None = None
    origin: str = "api"
    job: str | None = None
    """A job target narrowed to one job id (the Metric Proxy's ``target`` being a job)."""

    @property
    def slug(self) -> str:
        """The name as one Graphite path component (``High CPU`` → ``High_CPU``)."""
        return slug(self.name)

    def holds(self, observed: float) -> bool:
        return OPERATORS[self.operator](observed, self.value)

    @property
    def pretty(self) -> str:
        return f"{self.name}: {self.target} {self.metric} {self.operator} {self.value:g}" + (
            f" for {self.for_seconds:g} s" if self.for_seconds else ""
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def slug(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("_") or "_"


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise RuleError("name", "an alarm needs a name (a string)")
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise RuleError(
            "name", f"bad alarm name {name[:80]!r}: 1 to {MAX_NAME_LENGTH} letters, digits, spaces and _ . : -"
        )
    return name


def check_metric(metric: object) -> str:
    """A Graphite glob of at least two components (node first): ``*``, ``?``, ``[a-z]``, ``{a,b}``."""
    if not isinstance(metric, str) or not metric:
        raise RuleError("metric", "a metric is a Graphite glob such as *.CPUPercent.total (a string)")
    if len(metric) > MAX_METRIC_LENGTH:
        raise RuleError("metric", f"a metric has at most {MAX_METRIC_LENGTH} characters")
    components = metric.split(".")
    if len(components) < 2 or not all(_GLOB_COMPONENT.fullmatch(component) for component in components):
        raise RuleError(
            "metric", f"bad metric {metric[:80]!r}: dot-separated components (node first), each letters, digits,"
            " _ - and the globs * ? [..] {a,b}",
        )  # fmt: skip
    try:
        glob_regex(metric)
    except (ValueError, re.error) as error:
        raise RuleError("metric", f"bad metric {metric[:80]!r}: {error}") from None
    return metric


def check_value(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RuleError("value", f"the threshold must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except ValueError:
        raise RuleError("value", f"the threshold must be a number, not {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise RuleError("value", "the threshold must be a finite number")
    return number


def check_for(seconds: object) -> float:
    try:
        number = check_value(seconds)
    except RuleError as error:
        raise RuleError("for", str(error).replace("the threshold", "for")) from None
    if number < 0 or number > 30 * 86400:
        raise RuleError("for", "for is seconds between 0 and 30 days")
    return number


def make_rule(
    name: object,
    metric: object,
    operator_name: object,
    value: object,
    for_seconds: object = 0.0,
    target: object = "node",
    severity: object = "warning",
    action: object = None,
    origin: str = "api",
    job: object = None,
) -> Rule:
    """A checked rule; RuleError naming the field otherwise."""
    name = check_name(name)
    if name in BUILTIN_NAMES:
        raise RuleError("name", f"{name!r} is a built-in alarm; switch it in [alarms]")
    if operator_name not in OPERATORS:
        raise RuleError("operator", f"unknown operator {str(operator_name)[:20]!r}; valid: {' '.join(OPERATORS)}")
    if target not in TARGETS:
        raise RuleError("target", f"unknown target {str(target)[:40]!r}; valid: {', '.join(TARGETS)}")
    if severity not in SEVERITIES:
        raise RuleError("severity", f"unknown severity {str(severity)[:40]!r}; valid: {', '.join(SEVERITIES)}")
    if action is not None and not (isinstance(action, str) and _NAME.fullmatch(action)):
        raise RuleError("action", "action names an [action:NAME] section")
    if job is not None and not (isinstance(job, str) and job.isdigit() and len(job) < 20):
        raise RuleError("target", "a job id is a number")
    metric = check_metric(metric)
    if target == "job" and not any(JOB_COMPONENT.fullmatch(c) or c.startswith("job_") for c in metric.split(".")):
        raise RuleError("metric", "a job alarm's metric lies below SlurmJobs.job_* (e.g. *.SlurmJobs.job_*.rss)")
    return Rule(name, metric, str(operator_name), check_value(value), check_for(for_seconds), str(target),
                str(severity), action, origin, job)  # fmt: skip


def glob_regex(glob: str) -> re.Pattern[str]:
    """The regex of a Graphite glob over full paths: ``*`` and ``?`` stay inside one component."""
    out = []
    index = 0
    while index < len(glob):
        char = glob[index]
        if char == "*":
            out.append("[^.]*")
        elif char == "?":
            out.append("[^.]")
        elif char == "[":
            end = glob.find("]", index + 1)
            if end < 0:
                raise ValueError("unclosed [")
            body = glob[index + 1 : end]
            if not body or not re.fullmatch(r"!?[A-Za-z0-9_-]+", body):
                raise ValueError("a [..] class holds letters, digits, _ and ranges with -")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            index = end
        elif char == "{":
            end = glob.find("}", index + 1)
            if end < 0:
                raise ValueError("unclosed {")
            choices = glob[index + 1 : end].split(",")
            if not all(re.fullmatch(r"[A-Za-z0-9_-]+", choice) for choice in choices):
                raise ValueError("a {a,b} list holds plain names")
            out.append("(?:" + "|".join(map(re.escape, choices)) + ")")
            index = end
        elif char in "]},!":
            raise ValueError(f"stray {char!r}")
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("".join(out))


def literal_tail(glob: str) -> str | None:
    """The last component when it is a plain name (an index key for the evaluator), else None."""
    tail = glob.rsplit(".", 1)[-1]
    return tail if re.fullmatch(r"[A-Za-z0-9_-]+", tail) else None


def job_of(path: str) -> str | None:
    """The Slurm job id of a path below ``SlurmJobs.job_ID``, or None."""
    for component in path.split(".")[1:]:
        match = JOB_COMPONENT.fullmatch(component)
        if match:
            return match.group(1)
    return None


def aggregate(target: str, values: Iterable[float]) -> float | None:
    """The value a cluster or job state compares: mean, max or sum (job: sum); None without values."""
    values = list(values)
    if not values:
        return None
    if target == "cluster-mean":
        return math.fsum(values) / len(values)
    if target == "cluster-max":
        return max(values)
    return math.fsum(values)


class State(NamedTuple):
    """One state of a rule: ``since`` is when it entered ``status``, ``value`` what was last compared.

    A named tuple rather than a frozen dataclass: one is built for every block a node rule matches, and a
    frozen dataclass takes about three times as long to build."""

    status: str = "ok"
    since: float = 0.0
    value: float | None = None
    pending_since: float | None = None


def step(rule_for: float, state: State, holds: bool, value: float | None, now: float) -> State:
    """The next state, given whether the condition holds now; ``for`` counts from the first hold."""
    # States are built directly, not with dataclasses.replace: this runs for every block a rule matches.
    if holds:
        if state.status == "firing":
            return State(state.status, state.since, value, state.pending_since)
        started = state.pending_since if state.status == "pending" and state.pending_since is not None else now
        if now - started >= rule_for:
            return State("firing", now, value, None)
        if state.status == "pending":
            return State(state.status, state.since, value, state.pending_since)
        return State("pending", now, value, now)
    if state.status == "firing":
        return State("resolved", now, value, None)
    if state.status == "pending":
        return State("ok", now, value, None)
    return State(state.status, state.since, value, state.pending_since)


def from_json(data: Mapping[str, Any]) -> Rule:
    """A rule from its :meth:`Rule.to_json` (the store's file); RuleError when it no longer checks."""
    return make_rule(
        data.get("name"), data.get("metric"), data.get("operator"), data.get("value"), data.get("for_seconds", 0.0),
        data.get("target", "node"), data.get("severity", "warning"), data.get("action"), str(data.get("origin", "api")),
        data.get("job"),
    )  # fmt: skip
