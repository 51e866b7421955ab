"""Thin, typed wrappers over Slurm's client commands (squeue, sacct, scontrol).

Every call has a timeout (a client pointed at an unreachable slurmctld
retries for a minute) and fails with :class:`SlurmError`, whose text is one
line naming the command and Slurm's own complaint. Parsing is pure and
separate from running, so it is tested on recorded output.

Slurm prints times in the local time zone without an offset
(``2026-11-24T23:46:44``); they become POSIX timestamps here.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

DEFAULT_TIMEOUT = 10.0
SQUEUE_FIELDS = ("%i", "%u", "%P", "%N", "%S", "%T", "%C", "%j")
"""job id, user, partition, nodes, start, state, CPUs, name (last: it may hold ``|``)."""
SACCT_FIELDS = ("JobID", "User", "Partition", "NodeList", "Start", "End", "State", "AllocCPUS", "JobName")
NO_ACCOUNTING = "accounting storage is disabled"
"""sacct's complaint without slurmdbd; then ``sacct -c`` reads the jobcomp file."""
_USER_ID = re.compile(r"\(\d+\)$")
_NODE_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


class SlurmError(RuntimeError):
    """A Slurm command failed, timed out or printed what we cannot read; one line."""


@dataclass(frozen=True)
class Job:
    """One job as squeue or sacct describe it."""

    job_id: str
    user: str
    partition: str
    nodelist: str
    """Slurm's compressed host list, e.g. ``node[01-04]``; see :func:`expand_hostlist`."""
    state: str
    start: float | None
    end: float | None
    cpus: int | None
    name: str

    @property
    def nodes(self) -> list[str]:
        return expand_hostlist(self.nodelist)


def parse_time(text: str) -> float | None:
    """A Slurm timestamp (local time) as POSIX seconds; None for Unknown/None/N/A."""
    text = text.strip()
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _int_or_none(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def expand_hostlist(text: str) -> list[str]:
    """``node[01-03,07],gpu5`` → ``["node01", "node02", "node03", "node07", "gpu5"]``.

    Slurm's host list syntax, including zero padding and several bracket
    groups (``r[1-2]n[1-2]``). ``None``/``(null)``/empty → ``[]``; a
    malformed list raises ValueError.
    """
    text = text.strip()
    if text in ("", "None", "(null)", "None assigned"):
        return []
    hosts: list[str] = []
    for item in _split_top_level(text):
        hosts.extend(_expand_one(item))
    return hosts


def _split_top_level(text: str) -> list[str]:
    items, depth, current = [], 0, ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in host list {text!r}")
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise ValueError(f"unbalanced '[' in host list {text!r}")
    items.append(current)
    if any(not item for item in items):
        raise ValueError(f"empty host name in host list {text!r}")
    return items


def _expand_one(item: str) -> list[str]:
    start = item.find("[")
    if start < 0:
        return [item]
    end = item.index("]", start)
    prefix, ranges, rest = item[:start], item[start + 1 : end], item[end + 1 :]
    suffixes = _expand_one(rest) if rest else [""]
    names = []
    for part in ranges.split(","):
        match = _NODE_RANGE.match(part.strip())
        if not match:
            raise ValueError(f"bad range {part!r} in host list item {item!r}")
        low, high = match.group(1), match.group(2) or match.group(1)
        if int(high) < int(low) or int(high) - int(low) > 100_000:
            raise ValueError(f"bad range {part!r} in host list item {item!r}")
        width = len(low) if low.startswith("0") else 0
        names += [
            f"{prefix}{number:0{width}d}{suffix}" for number in range(int(low), int(high) + 1) for suffix in suffixes
        ]
    return names


def parse_squeue(text: str) -> list[Job]:
    """Jobs from ``squeue -h -o`` with :data:`SQUEUE_FIELDS` joined by ``|``."""
    jobs = []
    for line in text.splitlines():
        fields = line.split("|", len(SQUEUE_FIELDS) - 1)
        if len(fields) != len(SQUEUE_FIELDS) or not fields[0].strip():
            continue
        job_id, user, partition, nodes, start, state, cpus, name = fields
        jobs.append(Job(job_id.strip(), user.strip(), partition.strip(), nodes.strip(), state.strip(),
                        parse_time(start), None, _int_or_none(cpus), name))  # fmt: skip
    return jobs


def parse_sacct(text: str) -> list[Job]:
    """Jobs from ``sacct -P -n -X -o`` :data:`SACCT_FIELDS` (``|``-separated).

    ``sacct -c`` writes users as ``root(0)``; the uid is dropped. Job steps
    (``12.batch``), should any be listed, are skipped.
    """
    jobs = []
    for line in text.splitlines():
        fields = line.split("|", len(SACCT_FIELDS) - 1)
        if len(fields) != len(SACCT_FIELDS) or not fields[0].strip() or "." in fields[0]:
            continue
        job_id, user, partition, nodes, start, end, state, cpus, name = fields
        jobs.append(Job(job_id.strip(), _USER_ID.sub("", user.strip()), partition.strip(), nodes.strip(),
                        state.strip().split()[0] if state.strip() else "", parse_time(start), parse_time(end),
                        _int_or_none(cpus), name))  # fmt: skip
    return jobs


class Slurm:
    """Slurm's client commands, each with a timeout and one-line errors.

    ``squeue``/``sacct``/``scontrol`` are the commands' paths (or names on
    PATH); ``slurm_conf`` sets ``SLURM_CONF`` for them (a cluster whose
    slurm.conf is not in the default place).
    """

    def __init__(
        self,
        squeue: str = "squeue",
        sacct: str = "sacct",
        scontrol: str = "scontrol",
        timeout: float = DEFAULT_TIMEOUT,
        slurm_conf: str | None = None,
    ) -> None:
        self.squeue, self.sacct, self.scontrol = squeue, sacct, scontrol
        self.timeout = timeout
        self.env: Mapping[str, str] | None = {**os.environ, "SLURM_CONF": slurm_conf} if slurm_conf else None

    def _run(self, argv: Sequence[str]) -> str:
        try:
            result = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=self.timeout, env=self.env, check=False
            )
        except FileNotFoundError:
            raise SlurmError(f"{argv[0]}: command not found") from None
        except PermissionError:
            raise SlurmError(f"{argv[0]}: not executable (permission denied)") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(
                f"{argv[0]} {argv[1] if len(argv) > 1 else ''}: no answer within {self.timeout:g} s"
            ) from None
        if result.returncode != 0:
            lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
            raise SlurmError(f"{argv[0]} exited {result.returncode}: {lines[-1] if lines else 'no output'}")
        return result.stdout

    def running_jobs(self) -> list[Job]:
        """Jobs in state RUNNING, from ``squeue``."""
        output = self._run([self.squeue, "-h", "-t", "RUNNING", "-o", "|".join(SQUEUE_FIELDS)])
        return parse_squeue(output)

    def accounted_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        """The jobs' accounting records (allocations, not steps), from ``sacct``.

        Tries slurmdbd first and, when the cluster has no accounting storage,
        the job completion log (``sacct -c``, where jobs appear once ended).
        """
        if not job_ids:
            return []
        argv = [self.sacct, "-P", "-n", "-X", "-o", ",".join(SACCT_FIELDS), "-j", ",".join(job_ids)]
        try:
            return parse_sacct(self._run(argv))
        except SlurmError as error:
            if NO_ACCOUNTING not in str(error):
                raise
        return parse_sacct(self._run([*argv[:1], "-c", *argv[1:]]))

    def accounted_job(self, job_id: str) -> Job | None:
        """One job's accounting record, None when Slurm has none."""
        jobs = [job for job in self.accounted_jobs([job_id]) if job.job_id == job_id]
        return jobs[0] if jobs else None
