"""Actions: commands an administrator declared (``[action:NAME]``) that callers may run with arguments.

An action is an argument vector template, split with :func:`shlex.split`
when the configuration is read, each element possibly holding ``{arg}``
placeholders for the declared arguments. Running it:

1. every argument is checked against its pattern (``ARG pattern``, by default
   ``[A-Za-z0-9._-]+``, matched against the *whole* value) and unknown or
   missing arguments are refused, all before anything runs: ``;``,
   ``$(...)``, backticks, newlines or ``../`` never reach a process;
2. the vector is executed directly (:func:`asyncio.create_subprocess_exec`,
   never a shell) in its own process group, with no standard input;
3. at ``timeout`` seconds the whole group is killed;
4. at most :data:`OUTPUT_CAP` bytes of its output (stdout and stderr
   together) are kept; the rest is read and thrown away, so a chatty
   command cannot block on a full pipe;
5. one audit log line says who asked (address), which action, the
   arguments and the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import signal
import string
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

audit = logging.getLogger("fructosa.audit")

OUTPUT_CAP = 64 * 1024
DEFAULT_PATTERN = "[A-Za-z0-9._-]+"
DEFAULT_TIMEOUT = 30.0
MAX_ARGUMENT_LENGTH = 256
_ARGUMENT_NAME = re.compile(r"[a-z][a-z0-9_]*")


class ActionError(ValueError):
    """A request to run an action that is refused before anything runs."""


@dataclass(frozen=True)
class ActionSpec:
    name: str
    command: tuple[str, ...]
    arguments: tuple[str, ...] = ()
    patterns: dict[str, str] = field(default_factory=dict)
    """Argument → the regex its value must match entirely; absent: :data:`DEFAULT_PATTERN`."""
    timeout: float = DEFAULT_TIMEOUT

    def pattern(self, argument: str) -> str:
        return self.patterns.get(argument, DEFAULT_PATTERN)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "command": list(self.command),
            "arguments": {argument: self.pattern(argument) for argument in self.arguments},
            "timeout": self.timeout,
        }


def placeholders(element: str) -> list[str]:
    """The ``{name}`` fields of one vector element; ValueError for anything fancier (``{a.b}``, ``{0}``, ``{a!r}``)."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(element):
        if name is None:
            continue
        if not _ARGUMENT_NAME.fullmatch(name) or spec or conversion:
            raise ValueError(f"placeholder {{{name}}} is not a plain {{argument}}")
        names.append(name)
    return names


def make_action(
    name: str, command: str, arguments: Iterable[str] = (), patterns: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> ActionSpec:  # fmt: skip
    """A checked action; ValueError saying what is wrong (the configuration names the key)."""
    try:
        vector = tuple(shlex.split(command))
    except ValueError as error:
        raise ValueError(f"command: {error}") from None
    if not vector:
        raise ValueError("command: empty")
    arguments = tuple(arguments)
    for argument in arguments:
        if not _ARGUMENT_NAME.fullmatch(argument):
            raise ValueError(f"arguments: {argument!r} is not a name (lower-case letters, digits, _)")
    for element in vector:
        try:
            used = placeholders(element)
        except ValueError as error:
            raise ValueError(f"command: {error}") from None
        unknown = [name for name in used if name not in arguments]
        if unknown:
            raise ValueError(f"command: {{{unknown[0]}}} is not among the arguments ({', '.join(arguments) or 'none'})")
    if placeholders(vector[0]):
        raise ValueError("command: the program itself cannot be an argument")
    patterns = dict(patterns or {})
    for argument, pattern in patterns.items():
        if argument not in arguments:
            raise ValueError(f"{argument} pattern: {argument!r} is not among the arguments")
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"{argument} pattern: not a regular expression ({error})") from None
    if not 0 < timeout <= 3600:
        raise ValueError("timeout: seconds between 0 and 3600")
    return ActionSpec(name, vector, arguments, patterns, float(timeout))


def argument_vector(spec: ActionSpec, values: Mapping[str, object]) -> list[str]:
    """The checked vector to execute; ActionError for any argument refused."""
    if not isinstance(values, Mapping):
        raise ActionError("arguments must be an object of name → string")
    unknown = sorted(set(values) - set(spec.arguments))
    if unknown:
        raise ActionError(f"unknown argument {str(unknown[0])[:40]!r}; {spec.name} takes: {', '.join(spec.arguments)}")
    missing = [argument for argument in spec.arguments if argument not in values]
    if missing:
        raise ActionError(f"missing argument {missing[0]!r}")
    checked: dict[str, str] = {}
    for argument in spec.arguments:
        value = values[argument]
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ActionError(f"argument {argument!r} must be a string")
        text = str(value)
        if len(text) > MAX_ARGUMENT_LENGTH or not re.fullmatch(spec.pattern(argument), text):
            raise ActionError(f"argument {argument!r} = {text[:60]!r} refused: it must match {spec.pattern(argument)}")
        if text.startswith("-"):
            raise ActionError(f"argument {argument!r} = {text[:60]!r} refused: a leading - would read as an option")
        if text in (".", "..") or "/" in text and ".." in text.split("/"):
            raise ActionError(f"argument {argument!r} = {text[:60]!r} refused: no . or .. path components")
        checked[argument] = text
    return [element.format_map(checked) for element in spec.command]


class ActionRunner:
    """Runs declared actions; see the module docstring."""

    def __init__(self, specs: Iterable[ActionSpec] = (), output_cap: int = OUTPUT_CAP) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.output_cap = output_cap
        self.runs = 0
        self.failures = 0

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    async def run(self, name: str, values: Mapping[str, object], caller: str = "lmaster") -> dict[str, Any]:
        """The result ``{"action", "arguments", "result", "exit_status", "output"}``.

        KeyError for an unknown action and ActionError for refused arguments, both before anything runs.
        """
        spec = self.specs[name]
        try:
            vector = argument_vector(spec, values)
        except ActionError as error:
            audit.warning("action %s refused for %s: %s", name, caller, error)
            raise
        arguments = {argument: str(values[argument]) for argument in spec.arguments}
        started = time.monotonic()
        exit_status, output, note = await self._execute(vector, spec.timeout)
        result = {
            "action": name,
            "arguments": arguments,
            "result": "success" if exit_status == 0 else "failed",
            "exit_status": exit_status,
            "output": output + note,
        }
        self.runs += 1
        self.failures += exit_status != 0
        audit.info(
            "action %s run for %s with %s: %s (exit status %s, %.1f s)%s", name, caller, arguments, result["result"],
            exit_status, time.monotonic() - started, note,
        )  # fmt: skip
        return result

    async def _execute(self, vector: list[str], timeout: float) -> tuple[int | None, str, str]:
        try:
            process = await asyncio.create_subprocess_exec(
                *vector, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        except OSError as error:
            return None, "", f"cannot start {vector[0]}: {error.strerror or error}"
        kept = bytearray()
        dropped = 0

        async def drain() -> None:
            nonlocal dropped
            assert process.stdout is not None
            while chunk := await process.stdout.read(65536):
                room = self.output_cap - len(kept)
                kept.extend(chunk[: max(room, 0)])
                dropped += max(len(chunk) - max(room, 0), 0)
            await process.wait()

        note = ""
        timed_out = False
        try:
            await asyncio.wait_for(drain(), timeout)
        except asyncio.TimeoutError:
            _kill_group(process.pid)
            await process.wait()
            timed_out = True
            note = f"\n[killed after {timeout:g} s]"
        except asyncio.CancelledError:
            _kill_group(process.pid)
            raise
        if dropped:
            note = f"\n[{dropped} more bytes of output dropped]" + note
        status = None if timed_out else process.returncode
        return status, bytes(kept).decode("utf-8", "replace"), note


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
