"""Compare what agents measured (their debug journal) with what Graphite stored."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from whisper import CorruptWhisperFile

from .carbon import CarbonCache


def complete_lines(path: Path) -> list[str]:
    """The journal's lines, without a last one the agent is still writing (read while it runs, the file may end
    in the middle of a line: the agent writes a sample's lines in one call, flushed in buffer-sized pieces)."""
    text = path.read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()
    return lines


def journaled(path: Path) -> dict[str, set[int]]:
    """Metric path → whisper seconds the agent produced a value for."""
    produced: dict[str, set[int]] = defaultdict(set)
    if not path.exists():
        return produced
    for line in complete_lines(path):
        metric, _value, when = line.split()
        produced[metric].add(int(float(when)))
    return produced


def timestamps(path: Path, metric: str) -> list[float]:
    """The agent's own timestamps of ``metric``, in order: when it measured, to the fraction of a second.

    Whisper keeps one value per whole second, so a sample a few milliseconds late can skip a second there
    (10.98 s, then 12.01 s) without any sample missing; the journal tells a late sample from a missed one.
    """
    if not path.exists():
        return []
    fields = (line.split() for line in complete_lines(path))
    return sorted(float(when) for name, _value, when in fields if name == metric)


def missing_points(journals: list[Path], carbon: CarbonCache) -> dict[str, list[int]]:
    """Per metric, the seconds with a produced value but no stored one."""
    missing: dict[str, list[int]] = {}
    for journal in journals:
        for metric, seconds in journaled(journal).items():
            try:
                stored = {when for when, _ in carbon.series(metric, since=min(seconds) - 1)}
            except (FileNotFoundError, CorruptWhisperFile):  # not created yet, or caught mid-creation
                stored = set()
            lost = sorted(seconds - stored)
            if lost:
                missing[metric] = lost
    return missing


def count_points(journals: list[Path]) -> int:
    return sum(len(seconds) for journal in journals for seconds in journaled(journal).values())
