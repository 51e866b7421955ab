"""The memory Slurm allocated to a finished job, for the memory flags of ``fructosa-job-report``.

With slurmdbd, ``sacct -o AllocTRES`` says it (``billing=1,cpu=4,mem=16G,node=1``).
Without accounting storage ``sacct -c`` prints no TRES, but the
``jobcomp/filetxt`` log it reads holds them (``Tres=cpu=1,mem=100M,node=1``),
so that file (``JobCompLoc`` of ``scontrol show config``) is read directly;
it is readable wherever ``sacct -c`` works. The figure is the job's total
(memory per node times nodes); a job whose allocation Slurm did not record
has none, and its memory flags are not evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .slurm import NO_ACCOUNTING, Slurm, SlurmError

_MEM = re.compile(r"(?:^|,)mem=([0-9.]+)([KMGTP]?)(?:,|$)")
_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
"""Slurm's memory units are binary, and a bare number is MiB."""


def tres_memory(tres: str) -> int | None:
    """Bytes of ``mem=`` in a TRES string; None without one."""
    match = _MEM.search(tres.strip())
    if not match:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def jobcomp_tres(lines: Iterable[str], job_id: str) -> str | None:
    """The ``Tres=`` of the job's last record in a jobcomp/filetxt log (a requeued job has several).

    Takes lines (an open file): the log of a busy cluster is large.
    """
    found = None
    marker = f"JobId={job_id} "
    for line in lines:
        if line.startswith(marker):
            match = re.search(r"\bTres=(\S*)", line)
            found = match.group(1) if match else found
    return found


def config_value(scontrol_config: str, key: str) -> str | None:
    """``KEY = value`` from ``scontrol show config``."""
    for line in scontrol_config.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip()
    return None


class AllocationQueries(Slurm):
    """Slurm's client commands, plus what a job was allocated beyond its CPUs."""

    def allocated_memory(self, job_id: str) -> int | None:
        """The job's allocated memory in bytes; None when Slurm has no record of it or cannot be asked."""
        try:
            output = self._run([self.sacct, "-P", "-n", "-X", "-o", "JobID,AllocTRES", "-j", job_id])
        except SlurmError as error:
            if NO_ACCOUNTING not in str(error):
                return None
            return self._jobcomp_memory(job_id)
        for line in output.splitlines():
            found_id, _, tres = line.partition("|")
            if found_id.strip() == job_id:
                return tres_memory(tres)
        return None

    def _jobcomp_memory(self, job_id: str) -> int | None:
        try:
            config = self._run([self.scontrol, "show", "config"])
        except SlurmError:
            return None
        location = config_value(config, "JobCompLoc")
        if config_value(config, "JobCompType") != "jobcomp/filetxt" or not location:
            return None
        try:
            with open(location, errors="replace") as log:
                tres = jobcomp_tres(log, job_id)
        except OSError:
            return None
        return tres_memory(tres) if tres else None
