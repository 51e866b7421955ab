"""lmaster's ``[alarms]``, ``[alarm:NAME]`` and ``[action:NAME]`` sections.

``[alarm:NAME]`` and ``[action:NAME]`` are declarations, any number of them,
each built into a :class:`fructosa.alarms.rules.Rule` or
:class:`fructosa.alarms.actions.ActionSpec`; a bad one stops ``lmaster``
(and ``lmaster check``) with one line naming file, section, key and value.
An action's ``ARG pattern`` keys depend on its ``arguments``, so they are
read here rather than declared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..alarms.actions import DEFAULT_PATTERN, DEFAULT_TIMEOUT, ActionSpec, make_action
from ..alarms.rules import OPERATORS, SEVERITIES, TARGETS, Rule, RuleError, make_rule
from .loader import NamedRead
from .reader import IniFile
from .schema import Key, NamedSection, Section
from .values import (
    parse_bool,
    parse_fraction,
    parse_http_url,
    parse_number,
    parse_path,
    parse_positive_float,
    parse_positive_int,
    parse_seconds,
)

DEFAULT_ALARM_STATE_DIR = "/var/lib/fructosa/alarms"


@dataclass(frozen=True)
class AlarmsConfig:
    """``[alarms]``: the built-in alarms, where notifications go, where run-time alarms are kept."""

    node_silent: bool = True
    silent_after: float | None = None
    """None: three of the node's heartbeat intervals."""
    job_idle: bool = True
    job_idle_fraction: float = 0.25
    job_idle_for: float = 600.0
    webhook: str | None = None
    events_url: str | None = None
    state_dir: str | None = DEFAULT_ALARM_STATE_DIR
    max_alarms: int = 1000


def _choice(choices: tuple[str, ...]) -> Any:
    def parse(text: str) -> str:
        value = text.strip()
        if value not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return value

    return parse


def parse_state_dir(text: str) -> str | None:
    return None if text.strip().lower() in ("none", "no", "off") else parse_path(text)


ALARMS = Section(
    "alarms",
    doc="Alarms: the built-in ones, where notifications go and where alarms added at run time (HTTP API,"
    " fructosa-alarms) are kept. Transitions are logged and sent as fructosa.alarms.NAME.firing (0/1).",
    keys=(
        Key("node silent", "alarms.node_silent", parse_bool,
            "built-in alarm node-silent: a known node sent nothing for silent after seconds"),
        Key("silent after", "alarms.silent_after", parse_positive_float,
            "seconds of silence before node-silent fires; unset: three of the node's heartbeat intervals",
            example="90"),
        Key("job idle", "alarms.job_idle", parse_bool,
            "built-in alarm job-idle: a running Slurm job uses less than job idle fraction of its allocated CPUs"
            " (needs [slurm] for the allocations)"),
        Key("job idle fraction", "alarms.job_idle_fraction", parse_fraction, "the fraction (0 to 1)"),
        Key("job idle for", "alarms.job_idle_for", parse_seconds, "seconds a job must stay idle before it fires"),
        Key("webhook", "alarms.webhook", parse_http_url,
            "POST each alarm firing or resolved as JSON with Alertmanager's fields (status, labels, annotations,"
            " startsAt, endsAt); 5 s timeout, three retries", example="http://alerts.example.org/hook"),
        Key("events url", "alarms.events_url", parse_http_url,
            "graphite-web's events API: an event per alarm firing or resolved, tagged fructosa alarm NAME HOST",
            example="http://localhost/events/"),
        Key("state dir", "alarms.state_dir", parse_state_dir,
            "where alarms added at run time are kept (none: in memory only); left at the default, alarms/ in"
            " [lmaster] spool dir when that is set"),
        Key("max alarms", "alarms.max_alarms", parse_positive_int,
            "alarms in all (built-in, configured, added at run time); more are refused"),
    ),
)  # fmt: skip

ALARM_KEYS = (
    Key("metric", "metric", str.strip, "Graphite glob, the node first (*.CPUPercent.total, *.SlurmJobs.job_*.rss)",
        required="which series does the alarm watch?"),
    Key("operator", "operator", _choice(tuple(OPERATORS)), f"one of {' '.join(OPERATORS)}",
        required="how is the value compared?"),
    Key("value", "value", parse_number, "the threshold", required="what is the threshold?"),
    Key("for", "for_seconds", parse_seconds, "seconds the condition must hold before it fires (0: at once)", 0.0),
    Key("target", "target", _choice(TARGETS),
        "node: one state per node; cluster-mean, cluster-max, cluster-sum: over all nodes; job: per Slurm job"
        " (metrics below SlurmJobs.job_*, summed over the job's nodes)", "node"),
    Key("severity", "severity", _choice(SEVERITIES), " | ".join(SEVERITIES), "warning"),
    Key("action", "action", str.strip, "an [action:NAME] to run when it fires", None),
)  # fmt: skip


def build_alarm(read: NamedRead) -> Rule:
    values = read.values
    try:
        return make_rule(read.name, values["metric"], values["operator"], values["value"], values["for_seconds"],
                         values["target"], values["severity"], values["action"], origin="configuration")  # fmt: skip
    except RuleError as error:
        key = {"for": "for", "name": None}.get(error.field, error.field)
        if key is None:
            raise read.file.error(read.section, "section name", read.name, str(error)) from None
        raise read.error(key, str(error)) from None


def format_command(command: tuple[str, ...] | None) -> str | None:
    return None if command is None else " ".join(_quote(element) for element in command)


def _quote(element: str) -> str:
    import shlex

    return shlex.quote(element) if "{" not in element else element


ACTION_KEYS = (
    Key("command", "command", str.strip,
        "the argument vector, split like a shell would (no shell runs it), {ARG} for an argument",
        required="what does the action run?", format=format_command),
    Key("arguments", "arguments", lambda text: tuple(text.replace(",", " ").split()),
        "the arguments a caller may (and must) pass, space-separated", ()),
    Key("timeout", "timeout", parse_positive_float, "seconds before the command's process group is killed",
        DEFAULT_TIMEOUT),
)  # fmt: skip

_PATTERN_KEY = re.compile(r"([a-z][a-z0-9_]*) pattern")


def build_action(read: NamedRead) -> ActionSpec:
    """An action; the ``ARG pattern`` keys are read here and their unknown-key warnings withdrawn."""
    values = read.values
    parser = read.file.parser
    patterns = {}
    for option in parser.options(read.section):
        match = _PATTERN_KEY.fullmatch(option)
        if match and match.group(1) in values["arguments"]:
            patterns[match.group(1)] = parser.get(read.section, option).strip()
            _withdraw_warning(read.file, read.section, option)
    try:
        return make_action(read.name, values["command"], values["arguments"], patterns, values["timeout"])
    except ValueError as error:
        key, _, reason = str(error).partition(": ")
        raise read.error(key, reason) from None


def _withdraw_warning(file: IniFile, section: str, option: str) -> None:
    file.warnings = [warning for warning in file.warnings if f"[{section}] unknown key {option!r}" not in warning]


def check_alarm_actions(file: IniFile, values: dict[str, Any]) -> None:
    """An alarm's action must be declared; names must not collide once written in paths."""
    declared = {action.name for action in values.get("actions", ())}
    slugs: dict[str, str] = {}
    for rule in values.get("alarm_rules", ()):
        if rule.action is not None and rule.action not in declared:
            raise file.error(f"alarm:{rule.name}", "action", rule.action,
                             f"no [action:{rule.action}] section" + (f" (declared: {', '.join(sorted(declared))})"
                                                                     if declared else ""))  # fmt: skip
        if rule.slug in slugs:
            raise file.error(f"alarm:{rule.name}", "section name", rule.name,
                             f"written {rule.slug} in paths, like [alarm:{slugs[rule.slug]}]")  # fmt: skip
        slugs[rule.slug] = rule.name


ALARM_SECTIONS = (
    NamedSection(
        kind="alarm",
        field="alarm_rules",
        doc="Alarms: [alarm:NAME] with metric, operator, value and the keys below; e.g. [alarm:hot-node] metric ="
        " *.CPUPercent.total, operator = >, value = 95, for = 300, severity = critical. Alarms added at run time"
        " (HTTP API) are kept in [alarms] state dir; those declared here cannot be deleted there.",
        build=build_alarm,
        common_keys=ALARM_KEYS,
    ),
    NamedSection(
        kind="action",
        field="actions",
        doc="Actions: commands callers may run through the HTTP API (POST /api/actions/NAME) or an alarm's action;"
        " e.g. [action:drain] command = scontrol update nodename={node} state=drain reason=fructosa, arguments ="
        f" node, node pattern = node[0-9]+. Each ARG pattern key is a regex the argument must match entirely"
        f" (default {DEFAULT_PATTERN}); arguments are checked before anything runs, and no shell is involved.",
        build=build_action,
        common_keys=ACTION_KEYS,
    ),
)
