"""The hosts file of ``make-fructosa-dashboard``: an Ansible INI inventory.

A cluster's Ansible inventory usually exists already, so FrUCToSA reads the
same file (as 0.3.2 did)::

    # compute nodes
    [compute]
    node[01:64].cluster.local          # a range, as Ansible expands it
    gpu01 ansible_host=10.0.0.5        # host variables are ignored

    [cluster:children]
    compute

Sections ``[NAME]`` list hosts, ``[NAME:children]`` other sections, and
``[NAME:vars]`` is ignored; ``all`` and ``ungrouped`` work as in Ansible.
Each host becomes the short name the agent puts in its paths
(:func:`~fructosa.graphite_paths.short_hostname`); an IP address or two
hosts with one short name are errors, since their dashboards would show
nothing or the wrong node. Every problem is an :class:`InventoryError`
whose text is one line naming the file (and section).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import string
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..graphite_paths import short_hostname

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:[#;].*)?$")
_RANGE = re.compile(r"\[([0-9a-zA-Z]*):([0-9a-zA-Z]*)(?::([0-9]+))?\]")
_PORT = re.compile(r"^([^:]+):[0-9]+$")
MAX_HOSTS = 100_000
"""A range such as ``n[0:99999999]`` is a typo, not a cluster."""


class InventoryError(Exception):
    """Why the hosts of a section cannot be read (one line)."""


@dataclass
class Inventory:
    """The sections of one hosts file, lines kept with their numbers."""

    path: str
    hosts: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    children: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)

    def declare(self, name: str) -> None:
        if name not in self.sections:
            self.sections.append(name)
        self.hosts.setdefault(name, [])
        self.children.setdefault(name, [])


def parse(text: str, path: str) -> Inventory:
    """Sections and their raw lines; only headers are checked here."""
    inventory = Inventory(path)
    section, kind = "ungrouped", ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            match = _SECTION.match(line)
            if match is None:
                raise InventoryError(f"{path}: line {number}: malformed section header {line!r}")
            section, kind = match.group(1), match.group(2) or ""
            if kind not in ("", "vars", "children"):
                raise InventoryError(f"{path}: line {number}: [{section}:{kind}]: unknown section type {kind!r}")
            inventory.declare(section)
            continue
        if kind == "vars":
            continue
        inventory.declare(section)
        target = inventory.children if kind == "children" else inventory.hosts
        target[section].append((number, line))
    return inventory


def _expand(pattern: str) -> Iterator[str]:
    """Ansible host ranges: ``node[01:10]``, ``rack[a:c]-n[1:9:2]``."""
    match = _RANGE.search(pattern)
    if match is None:
        yield pattern
        return
    begin, end, step = match.group(1) or "0", match.group(2), int(match.group(3) or 1)
    if not end or step < 1:
        raise ValueError(f"range [{match.group(1)}:{end}] needs an end and a step >= 1")
    letters = string.ascii_letters
    if begin in letters and end in letters and len(begin) == len(end) == 1:
        if letters.index(begin) > letters.index(end):
            raise ValueError(f"range [{begin}:{end}] runs backwards")
        values = list(letters[letters.index(begin) : letters.index(end) + 1 : step])
    elif begin.isdigit() and end.isdigit():
        if int(begin) > int(end):
            raise ValueError(f"range [{begin}:{end}] runs backwards")
        width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
        if width and len(end) != width:
            raise ValueError(f"range [{begin}:{end}]: zero-padded ends must be equally long")
        if (int(end) - int(begin)) // step >= MAX_HOSTS:
            raise ValueError(f"range [{begin}:{end}] has more than {MAX_HOSTS} hosts")
        values = [str(value).zfill(width) for value in range(int(begin), int(end) + 1, step)]
    else:
        raise ValueError(f"range [{begin}:{end}] is neither numbers nor single letters")
    for value in values:
        yield from _expand(pattern[: match.start()] + value + pattern[match.end() :])


def _host_names(inventory: Inventory, section: str, number: int, line: str) -> list[str]:
    where = f"{inventory.path}: [{section}] line {number}"
    try:
        words = shlex.split(line, comments=True)
    except ValueError as error:
        raise InventoryError(f"{where}: {error}") from None
    if not words:
        return []
    pattern, variables = words[0], words[1:]
    for variable in variables:
        if "=" not in variable or variable.startswith("="):
            raise InventoryError(f"{where}: host variable {variable!r} is not key=value")
    port = _PORT.match(pattern)
    pattern = port.group(1) if port else pattern
    try:
        names = list(_expand(pattern))
    except ValueError as error:
        raise InventoryError(f"{where}: {pattern}: {error}") from None
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            continue
        raise InventoryError(
            f"{where}: {name} is an IP address; the agent sends its host name (write e.g. node01 ansible_host={name})"
        )
    return names


def section_hosts(inventory: Inventory, section: str) -> list[tuple[str, str]]:
    """``(where, inventory name)`` of every host of ``section``, children included."""
    if section == "all" and "all" not in inventory.sections:
        sections = inventory.sections
    elif section in inventory.sections:
        sections, seen = [], set()
        pending = [section]
        while pending:
            current = pending.pop(0)
            if current in seen:
                continue
            seen.add(current)
            sections.append(current)
            pending += [child.split("#")[0].strip() for _, child in inventory.children.get(current, [])]
    else:
        known = ", ".join(inventory.sections) or "none"
        raise InventoryError(f"{inventory.path}: no section [{section}] (sections: {known})")
    found = []
    for current in sections:
        for number, line in inventory.hosts.get(current, []):
            where = f"[{current}] line {number}"
            found += [(where, name) for name in _host_names(inventory, current, number, line)]
    return found


def read_hosts(path: str, section: str = "hosts") -> list[str]:
    """Short host names of ``section`` of the hosts file ``path``, in file order."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except UnicodeDecodeError:
        raise InventoryError(f"{path}: not a text file (UTF-8)") from None
    except OSError as error:
        raise InventoryError(f"{path}: cannot read: {error.strerror or error}") from None
    found = section_hosts(parse(text, path), section)
    if not found:
        raise InventoryError(f"{path}: section [{section}] has no hosts")
    names: dict[str, tuple[str, str]] = {}
    for where, host in found:
        name = short_hostname(host)
        if name in names and names[name][1] != host:
            other_where, other = names[name]
            raise InventoryError(
                f"{path}: {other_where} {other} and {where} {host} are both {name!r} in Graphite paths"
            )
        names.setdefault(name, (where, host))
    return list(names)
