"""The commented example files conf/lagent.conf and conf/lmaster.conf, written from the schema.

``python -m fructosa.config.examples`` rewrites them (``--check``: only say
whether they are up to date); tests/test_conf_examples.py fails when they
and the declarations disagree. Every key appears with its doc, at its
default, except the few :data:`AGENT_CHOICES` the shipped file makes on
purpose (each says why next to it).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from .agent import AGENT_SCHEMA
from .effective import declared_default, ini_line
from .master import MASTER_SCHEMA
from .schema import Key, NamedSection, Schema, Section

WIDTH = 79
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@dataclass(frozen=True)
class Choice:
    """A value the shipped example sets on purpose instead of the default, and why."""

    section: str
    key: str
    value: str
    reason: str


NODE_DASHBOARD = "the node dashboard draws"
AGENT_CHOICES = (
    Choice("sensor:CPUTimesPercent", "percpu", "yes", "the CPU time by mode of each CPU (about 10 series per CPU)"),
    Choice("sensor:CPUFreq", "percpu", "yes", f"{NODE_DASHBOARD} the frequency of each CPU"),
    Choice("sensor:DiskIOCounters", "perdisk", "yes", f"{NODE_DASHBOARD} each disk (throughput, operations, busy)"),
    Choice("sensor:NetIOCounters", "pernic", "yes", f"{NODE_DASHBOARD} each interface"),
    Choice("sensor:Users", "per_user", "yes", f"{NODE_DASHBOARD} the sessions of each user"),
)
EXAMPLES = {"lagent.conf": (AGENT_SCHEMA, AGENT_CHOICES), "lmaster.conf": (MASTER_SCHEMA, ())}


def comment(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(
        text, WIDTH, initial_indent=f"# {indent}", subsequent_indent=f"# {indent}{'  ' if indent else ''}",
        break_long_words=False, break_on_hyphens=False,
    )  # fmt: skip


def _chosen(choices: tuple[Choice, ...], section: str, key: Key) -> Choice | None:
    return next((choice for choice in choices if (choice.section, choice.key) == (section, key.name)), None)


def key_lines(
    root: type | None, section: str, key: Key, choices: tuple[Choice, ...], documented: bool = True
) -> list[str]:
    """The key's doc (unless ``documented`` elsewhere) and its line: the default, an example, or a choice."""
    lines = comment(key.doc) if documented else []
    default = key.format(declared_default(root, key))
    choice = _chosen(choices, section, key)
    if choice is not None:
        lines += comment(f"not the default ({default}): {choice.reason}")
        return [*lines, ini_line(key.name, choice.value)]
    if key.example:
        return [*lines, "#" + ini_line(key.name, key.example)]
    return [*lines, ini_line(key.name, default).rstrip()]


def section_text(root: type, section: Section, choices: tuple[Choice, ...]) -> str:
    """Doc, header and keys; an optional section is all commented out (its presence turns it on)."""
    lines = [f"[{section.name}]"]
    for key in section.keys:
        lines += key_lines(root, section.name, key, choices)
    if section.optional_field:
        lines = [line if line.startswith("#") else f"#{line}" for line in lines]
    return "\n".join([*comment(section.doc), *lines]) + "\n"


def named_text(named: NamedSection, choices: tuple[Choice, ...]) -> list[str]:
    """The keys every section takes, documented once; then one section per variant, all at their defaults."""
    intro = [*comment(named.doc), f"# Every [{named.prefix}NAME] section takes:"]
    for key in named.common_keys:
        intro += comment(f"{key.name}: {key.doc}", indent="  ")
    blocks = ["\n".join(intro) + "\n"]
    for variant in (named.all_variants() or {}).values():
        section = f"{named.prefix}{variant.name}"
        lines = comment(f"{variant.name}: {variant.doc}.")
        for key in variant.keys:
            lines += comment(f"{key.name}: {key.doc}", indent="  ")
        lines.append(f"[{section}]")
        for key in named.keys_of(variant):
            if not key.optional:
                lines += key_lines(None, section, key, choices, documented=False)
        blocks.append("\n".join(lines) + "\n")
    return blocks


def render(schema: Schema, choices: tuple[Choice, ...] = ()) -> str:
    """The whole example file of ``schema``'s program."""
    head = [*comment(schema.doc), *comment(
        "Written by python -m fructosa.config.examples from the declarations in fructosa/config/ and the sensor"
        " classes: change those, then run it again.")]  # fmt: skip
    blocks = ["\n".join(head) + "\n"]
    blocks += [section_text(schema.root, section, choices) for section in schema.sections]
    for named in schema.named:
        blocks += named_text(named, choices)
    return "\n".join(blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fructosa.config.examples", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=CONF_DIR, help="directory to write to (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, (schema, choices) in EXAMPLES.items():
        path, text = args.output / name, render(schema, choices)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
    for path in stale:
        print(f"{path}: {'out of date' if args.check else 'written'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
