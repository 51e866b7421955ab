"""Graphite's path globs, matched the way graphite-web's finder matches them, without its filesystem.

A Grafana user already knows these patterns from graphite-web's ``find`` and
``render`` targets, so the live stream (:mod:`.stream`) takes the same ones,
with the same meaning:

* the pattern is split at dots into components, one per path component
  (backslashes are removed first, as graphite-web does);
* in each component, brace groups expand first: the leftmost innermost
  ``{a,b,...}`` group is replaced by each of its alternatives, repeatedly, so
  ``{a,{b,c}}x`` is ``ax``, ``bx`` and ``cx``; an unbalanced brace is a
  literal character;
* each alternative then matches one path component as a shell glob
  (:func:`fnmatch.fnmatchcase`): ``*`` any characters, ``?`` one, ``[abc]``,
  ``[a-z]`` and ``[!abc]`` sets, an unclosed ``[`` is literal;
* an alternative that is exactly ``**`` spans components: zero or more in
  the middle of a pattern, one or more at its end.

Patterns come from network clients, so compiling is bounded: at most
:data:`MAX_ALTERNATIVES` brace alternatives per component (``{a,b}`` twenty
times over would otherwise expand to a million), and each component becomes
one regex built by :func:`fnmatch.translate`, whose ``*`` uses atomic groups:
no regex here can backtrack exponentially. ``**`` is not a regex but a step
of :meth:`GlobPattern.matches_parts`, a set-of-positions walk that costs at
most components × path components.
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache

MAX_ALTERNATIVES = 64
"""Brace alternatives one component may expand to."""
_BRACE_GROUP = re.compile(r"\{([^{}]*)\}")
_WILDCARDS = re.compile(r"[*?\[]")
GLOBSTAR = "**"


class PatternError(ValueError):
    """A pattern that cannot be compiled within the limits; the message says why, in one line."""


def expand_braces(text: str, limit: int = MAX_ALTERNATIVES) -> frozenset[str]:
    """Every alternative of ``text`` (see the module docstring); PatternError beyond ``limit`` of them."""
    finished: set[str] = set()
    seen = {text}
    pending = [text]
    while pending:
        current = pending.pop()
        group = _BRACE_GROUP.search(current)
        if group is None:
            finished.add(current)
            if len(finished) > limit:
                raise PatternError(f"{text[:80]!r} expands to more than {limit} brace alternatives")
            continue
        head, tail = current[: group.start()], current[group.end() :]
        for alternative in group.group(1).split(","):
            expanded = head + alternative + tail
            if expanded not in seen:
                seen.add(expanded)
                pending.append(expanded)
        if len(seen) > 4 * limit:
            raise PatternError(f"{text[:80]!r} expands to more than {limit} brace alternatives")
    return frozenset(finished)


class _Component:
    """One pattern component: literal names, one regex for the wildcard alternatives, and whether ``**`` is one."""

    __slots__ = ("names", "regex", "globstar")

    def __init__(self, text: str):
        alternatives = expand_braces(text)
        self.globstar = GLOBSTAR in alternatives
        alternatives = alternatives - {GLOBSTAR}
        wild = sorted(alternative for alternative in alternatives if _WILDCARDS.search(alternative))
        self.names = frozenset(alternatives.difference(wild))
        self.regex = re.compile("|".join(fnmatch.translate(alternative) for alternative in wild)) if wild else None

    def matches(self, name: str) -> bool:
        return name in self.names or (self.regex is not None and self.regex.match(name) is not None)


class GlobPattern:
    """A compiled Graphite glob; build it with :func:`compile_pattern` (cached)."""

    __slots__ = ("text", "components", "has_globstar")

    def __init__(self, text: str, max_length: int):
        if not text:
            raise PatternError("an empty pattern matches nothing")
        if len(text) > max_length:
            raise PatternError(f"a pattern has at most {max_length} characters, not {len(text)}")
        if not text.isascii() or not text.isprintable():
            raise PatternError(f"{text[:80]!r}: a pattern is printable ASCII (Graphite paths are)")
        self.text = text
        self.components = tuple(_Component(part) for part in text.replace("\\", "").split("."))
        self.has_globstar = any(component.globstar for component in self.components)

    def matches(self, path: str) -> bool:
        return self.matches_parts(path.split("."))

    def matches_parts(self, parts: list[str]) -> bool:
        components = self.components
        if not self.has_globstar:  # the usual case, on lmaster's hot path: a plain loop, no calls
            if len(parts) != len(components):
                return False
            for component, part in zip(components, parts):  # noqa: B905 - lengths are equal
                if part not in component.names and (component.regex is None or not component.regex.match(part)):
                    return False
            return True
        count = len(parts)
        positions = {0}  # how many path components the pattern's first components can have consumed
        last = len(components) - 1
        for index, component in enumerate(components):
            following: set[int] = set()
            for position in positions:
                if position < count and component.matches(parts[position]):
                    following.add(position + 1)
                if component.globstar:
                    if index == last:
                        if position < count:
                            following.add(count)  # a final ** takes one or more components
                    else:
                        following.update(range(position, count + 1))  # a middle ** takes zero or more
            if not following:
                return False
            positions = following
        return count in positions

    def may_match_first(self, name: str) -> bool:
        """Whether a path starting with component ``name`` (a host) can match: a cheap pre-filter."""
        first = self.components[0]
        return first.globstar or first.matches(name)

    def relatives(self, limit: int = 64) -> list[str] | None:
        """Every path below the first component this pattern can match, when there are few (an index lookup
        instead of a scan); None when a later component has wildcards or there are more than ``limit``."""
        paths = [""]
        for component in self.components[1:]:
            if component.globstar or component.regex is not None or len(paths) * len(component.names) > limit:
                return None
            paths = [f"{path}.{name}" if path else name for path in paths for name in sorted(component.names)]
        return paths if len(self.components) > 1 else None

    def first_names(self) -> frozenset[str] | None:
        """The only names the first component can match (an index key), or None if it has wildcards."""
        first = self.components[0]
        return None if first.globstar or first.regex is not None else first.names

    def __repr__(self) -> str:
        return f"GlobPattern({self.text!r})"


@lru_cache(maxsize=4096)
def compile_pattern(text: str, max_length: int = 512) -> GlobPattern:
    """The compiled pattern (shared by every client that asks for the same text); PatternError if it is bad."""
    return GlobPattern(text, max_length)
