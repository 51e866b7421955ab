"""Which Slurm jobs run on this node, and which processes belong to each.

Three sources, tried in order of trust:

1. **cgroups** — with ``ProctrackType=proctrack/cgroup`` every process of a
   job sits below a ``job_N/step_*`` cgroup: on cgroup v1
   ``/sys/fs/cgroup/CONTROLLER/slurm[_HOST]/uid_U/job_N/step_S`` and on
   cgroup v2 ``/sys/fs/cgroup/system.slice/[NODE_]slurmstepd.scope/job_N/step_S``.
   Processes cannot leave them, so this is exact and cheap.
2. **process environments** — every process Slurm starts inherits
   ``SLURM_JOB_ID``; reading ``/proc/PID/environ`` finds jobs under any
   ``ProctrackType`` but needs root to see other users' processes, and a
   process may rewrite its environment.
3. **``scontrol listpids``** — asks slurmd itself; costs a subprocess and an
   RPC, so it is the last resort (an unprivileged agent that cannot read
   other users' environments).

Job ids are kept as strings (``"1234"``): they are Slurm's names for jobs,
and Slurm's own tools print them as text.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_ROOT = Path("/proc")
JOB_DIR_GLOBS = (
    "*/slurm*/uid_*/job_*",  # cgroup v1: one tree per controller (freezer, cpuset, memory…)
    "slurm*/uid_*/job_*",  # cgroup v1 with a single mounted controller
    "system.slice/*slurmstepd.scope/job_*",  # cgroup v2 (Slurm 22.05+)
    "unified/system.slice/*slurmstepd.scope/job_*",  # cgroup v2 in a hybrid layout
)
"""Where Slurm puts a job's cgroup, relative to the cgroup mount point."""
SLURM_TREE_GLOBS = ("*/slurm*", "slurm*", "system.slice/*slurmstepd.scope", "unified/system.slice/*slurmstepd.scope")
"""Directories that exist whenever slurmd uses cgroups, jobs or not."""
STEPD_CGROUP_LEAF = "slurm"
"""On cgroup v2, ``job_N/step_S/slurm`` holds slurmstepd itself, not the job."""
_CGROUP_JOB = re.compile(r"(?:^|/)(?:slurm[^/]*/uid_\d+|[^/]*slurmstepd\.scope)/job_(\d+)(?:/|$)")
_JOB_ID = re.compile(rb"(?:^|\x00)SLURM_JOB_ID=(\d+)(?:\x00|$)")
SCONTROL_TIMEOUT = 5.0
"""Seconds ``scontrol listpids`` may take before the node counts as unreachable."""

METHODS = ("auto", "cgroup", "environ", "scontrol")


def job_of_cgroup_text(text: str) -> str | None:
    """The job id in the contents of ``/proc/PID/cgroup``, or None.

    Lines look like ``4:freezer:/slurm_node01/uid_0/job_7/step_batch`` (v1)
    or ``0::/system.slice/slurmstepd.scope/job_7/step_0/user/task_0`` (v2).
    slurmstepd sits in ``job_N`` itself on v1 and in ``job_N/step_S/slurm``
    on v2; both count as the job's (it works for the job).
    """
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        match = _CGROUP_JOB.search(path)
        if match:
            return match.group(1)
    return None


def job_of_environ(data: bytes) -> str | None:
    """``SLURM_JOB_ID`` from the raw contents of ``/proc/PID/environ``, or None."""
    match = _JOB_ID.search(data)
    return match.group(1).decode("ascii") if match else None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # vanished, permission denied, not Linux
        return None


def job_id_of_pid(pid: int, proc_root: Path = PROC_ROOT) -> str | None:
    """The Slurm job id process ``pid`` runs in, or None.

    Its cgroup first (exact under proctrack/cgroup), then its environment.
    Never raises: a process that ended or cannot be read is simply in no job.
    """
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return None
    if pid <= 0:
        return None
    cgroup = _read(proc_root / str(pid) / "cgroup")
    if cgroup is not None:
        job = job_of_cgroup_text(cgroup.decode("utf-8", "replace"))
        if job is not None:
            return job
    environ = _read(proc_root / str(pid) / "environ")
    return job_of_environ(environ) if environ is not None else None


@dataclass
class Discovery:
    """One look at the node: job id → pids, and how it was found."""

    jobs: dict[str, set[int]] = field(default_factory=dict)
    source: str = "none"
    """``cgroup``, ``environ``, ``scontrol`` or ``none``."""
    slurm_present: bool = False
    """Whether this node shows any sign of Slurm (cgroup tree, daemons, ``scontrol``)."""
    problem: str | None = None
    """Why a source failed (e.g. ``scontrol`` timed out), for the log."""


def _pids_in(directory: Path) -> set[int]:
    """Every pid in ``cgroup.procs`` at or below ``directory`` (one job step),
    without v2's ``slurm`` leaf, which holds slurmstepd."""
    pids: set[int] = set()
    for current, subdirs, files in os.walk(directory):
        subdirs[:] = [name for name in subdirs if name != STEPD_CGROUP_LEAF]
        if "cgroup.procs" in files:
            data = _read(Path(current) / "cgroup.procs")
            if data:
                pids.update(int(word) for word in data.split() if word.isdigit())
    return pids


def slurm_cgroup_trees(cgroup_root: Path = CGROUP_ROOT) -> list[Path]:
    """Slurm's cgroup directories on this node (empty without proctrack/cgroup)."""
    return sorted({path for pattern in SLURM_TREE_GLOBS for path in cgroup_root.glob(pattern) if path.is_dir()})


def jobs_from_cgroups(cgroup_root: Path = CGROUP_ROOT) -> dict[str, set[int]]:
    """Job id → pids from the ``job_N/step_*`` cgroups (all controllers, merged)."""
    jobs: dict[str, set[int]] = {}
    for pattern in JOB_DIR_GLOBS:
        for job_dir in cgroup_root.glob(pattern):
            job = job_dir.name.removeprefix("job_")
            if not job.isdigit():
                continue
            pids = jobs.setdefault(job, set())
            for step in job_dir.glob("step_*"):
                pids |= _pids_in(step)
    return {job: pids for job, pids in jobs.items() if pids}


def _numeric_dirs(proc_root: Path) -> Iterable[int]:
    try:
        names = os.listdir(proc_root)
    except OSError:
        return ()
    return (int(name) for name in names if name.isdigit())


def jobs_from_environ(proc_root: Path = PROC_ROOT) -> dict[str, set[int]]:
    """Job id → pids from ``SLURM_JOB_ID`` in process environments (all of
    them as root; only the agent user's own otherwise)."""
    jobs: dict[str, set[int]] = {}
    for pid in _numeric_dirs(proc_root):
        data = _read(proc_root / str(pid) / "environ")
        job = job_of_environ(data) if data else None
        if job is not None:
            jobs.setdefault(job, set()).add(pid)
    return jobs


def parse_listpids(text: str) -> dict[str, set[int]]:
    """Job id → pids from ``scontrol listpids`` (``PID JOBID STEPID LOCALID GLOBALID``).

    The header and malformed lines are skipped; pid ``-1`` rows (steps with
    no local process yet) too.
    """
    jobs: dict[str, set[int]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or not words[0].isdigit() or not words[1].isdigit():
            continue
        jobs.setdefault(words[1], set()).add(int(words[0]))
    return jobs


def jobs_from_scontrol(scontrol: str = "scontrol", timeout: float = SCONTROL_TIMEOUT) -> dict[str, set[int]]:
    """Job id → pids from ``scontrol listpids``; raises OSError with a one-line reason."""
    try:
        result = subprocess.run([scontrol, "listpids"], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise OSError(f"{scontrol} listpids took more than {timeout:g} s") from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        # "no job steps" is how slurmd answers an idle node
        if any("no job" in line.lower() for line in message):
            return {}
        raise OSError(f"{scontrol} listpids failed ({result.returncode}): {message[-1] if message else 'no output'}")
    return parse_listpids(result.stdout)


def slurm_daemon_running(proc_root: Path = PROC_ROOT) -> bool:
    """Whether slurmd or a slurmstepd runs here (by ``/proc/PID/comm``)."""
    for pid in _numeric_dirs(proc_root):
        comm = _read(proc_root / str(pid) / "comm")
        if comm is not None and comm.strip() in (b"slurmd", b"slurmstepd"):
            return True
    return False


def discover(
    method: str = "auto",
    cgroup_root: Path = CGROUP_ROOT,
    proc_root: Path = PROC_ROOT,
    scontrol: str = "scontrol",
) -> Discovery:
    """The jobs on this node by ``method`` (one of :data:`METHODS`).

    ``auto``: the cgroup tree when slurmd made one (it is authoritative, even
    when empty); otherwise process environments; ``scontrol listpids`` only
    when environments found nothing and the agent is not root (it cannot read
    other users' environments).
    """
    if method not in METHODS:
        raise ValueError(f"unknown job discovery method {method!r} (one of {', '.join(METHODS)})")
    trees = slurm_cgroup_trees(cgroup_root) if method in ("auto", "cgroup") else []
    if method == "cgroup" or (method == "auto" and trees):
        return Discovery(jobs_from_cgroups(cgroup_root), "cgroup", slurm_present=bool(trees))
    import shutil  # here: shutil brings bz2 and lzma into every agent, and only this line needs it

    scontrol_path = shutil.which(scontrol)
    present = scontrol_path is not None or slurm_daemon_running(proc_root)
    if method == "scontrol":
        return _via_scontrol(scontrol, scontrol_path, present)
    jobs = jobs_from_environ(proc_root)
    if jobs or method == "environ" or os.geteuid() == 0 or scontrol_path is None:
        return Discovery(jobs, "environ", slurm_present=present or bool(jobs))
    return _via_scontrol(scontrol, scontrol_path, present)


def _via_scontrol(scontrol: str, scontrol_path: str | None, present: bool) -> Discovery:
    if scontrol_path is None:
        return Discovery({}, "scontrol", slurm_present=present, problem=f"{scontrol}: not found")
    try:
        return Discovery(jobs_from_scontrol(scontrol_path), "scontrol", slurm_present=True)
    except OSError as error:
        return Discovery({}, "scontrol", slurm_present=True, problem=str(error))


def running_jobs(method: str = "auto") -> dict[str, list[int]]:
    """Job id → sorted pids of every Slurm job with a process on this node.

    The simple form of :func:`discover` for callers that need no diagnosis:
    an empty dict means no job here (or no Slurm at all). Never raises for
    unreadable processes or a hung ``scontrol``; only for an unknown ``method``.
    """
    return {job: sorted(pids) for job, pids in sorted(discover(method).jobs.items(), key=lambda item: int(item[0]))}
