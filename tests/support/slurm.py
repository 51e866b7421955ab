"""A real single-node Slurm (munged + slurmctld + slurmd) inside a temp dir.

The Slurm features (job discovery, the master's job events, job reports)
are tested against the real scheduler, not a fake ``squeue``: this follows
the recipe in shared/reference/slurm-single-node.md literally. Everything
lives under one directory; the daemons listen on free loopback ports; each
is our child process, stopped by its own PID. The only processes not our
children are the job steps' ``slurmstepd``, which slurmd double-forks: they
are recognised by *our* ``SLURM_CONF`` in their environment, and killed by
PID only if they outlive their jobs.

Needs root (``SlurmdUser=root``) and the Debian packages ``slurmctld slurmd
slurm-client munge``; :func:`unavailable_reason` says why not when not.
Like carbon.py this module does not import pytest.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .carbon import POLL_INTERVAL, ServerProcess, free_ports, tail
from .waiting import wait_for

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sacct", "sinfo", "scontrol")
CGROUP_FREEZER = Path("/sys/fs/cgroup/freezer")
MACHINE_LOCK = Path(tempfile.gettempdir()) / "fructosa-slurm-cluster.lock"
"""Held by the one running :class:`SlurmCluster` of this machine: two at once would share the node's
name and its freezer cgroup (``slurm_HOST``), whichever test run (or pytest-xdist worker) starts them."""
MACHINE_LOCK_TIMEOUT = 240.0

BURNER_SCRIPT = Path(__file__).with_name("burner.py")


def burner_job(seconds: float, share_file: Path) -> str:
    """The ``sbatch --wrap`` command of a job busy on one CPU for ``seconds`` of wall time
    (tests/support/burner.py), which keeps ``share_file`` holding the share of that CPU it has had, in %."""
    return f"{sys.executable} {BURNER_SCRIPT} {seconds:g} {share_file}"


def cpu_share(share_file: Path, timeout: float = 60.0) -> float:
    """What a :func:`burner_job` last wrote: the share of one CPU (%) the machine gave its busy loop."""
    wait_for(share_file.exists, timeout, f"the burner's share in {share_file}")
    return float(share_file.read_text())


class SlurmError(RuntimeError):
    """A Slurm daemon died, never became ready, or a client command failed."""


def unavailable_reason() -> str | None:
    """Why a real Slurm cannot run here (None when it can)."""
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        install = "apt-get install slurmctld slurmd slurm-client munge"
        return f"Slurm/munge not installed (missing {', '.join(missing)}; {install})"
    if os.geteuid() != 0:
        return "a single-node Slurm with SlurmdUser=root needs the tests to run as root"
    return None


def cgroup_tracking_possible() -> bool:
    """Whether proctrack/cgroup can work here: a writable cgroup v1 freezer."""
    return CGROUP_FREEZER.is_dir() and os.access(CGROUP_FREEZER, os.W_OK)


class SlurmCluster:
    """One node, one ``debug`` partition, jobs accounted in a jobcomp text file.

    ``proctrack`` is ``cgroup`` (jobs in ``/sys/fs/cgroup/freezer/slurm_HOST``)
    or ``linuxproc`` (found through their environment); ``auto`` picks cgroup
    when the freezer hierarchy is writable.
    """

    def __init__(self, base_dir: Path, proctrack: str = "auto", startup_timeout: float = 60.0) -> None:
        self.base_dir = Path(base_dir).resolve()
        if proctrack == "auto":
            proctrack = "cgroup" if cgroup_tracking_possible() else "linuxproc"
        if proctrack not in ("cgroup", "linuxproc"):
            raise ValueError(f"proctrack must be cgroup, linuxproc or auto, not {proctrack!r}")
        self.proctrack = proctrack
        self.startup_timeout = startup_timeout
        self.hostname = socket.gethostname().split(".")[0]
        self.conf_path = self.base_dir / "etc" / "slurm.conf"
        self.jobcomp_path = self.base_dir / "jobcomp.txt"
        self.munge_dir = self.base_dir / "munge"  # moved below /tmp by start() when base_dir is private
        self.cpus = 0
        self._munged = ServerProcess("munged", self.base_dir / "munged.log")
        self._slurmctld = ServerProcess("slurmctld", self.base_dir / "slurmctld.out")
        self._slurmd = ServerProcess("slurmd", self.base_dir / "slurmd.out")
        self._machine_lock: int | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """What every Slurm daemon and client command needs."""
        return {"SLURM_CONF": str(self.conf_path)}

    def start(self) -> SlurmCluster:
        """munged, then slurmctld and slurmd; returns once the node is idle.

        Waits first (up to MACHINE_LOCK_TIMEOUT s) while another cluster runs on this machine."""
        self._take_machine_lock()
        try:
            self._start_daemons()
        except BaseException:
            self.stop()
            raise
        return self

    def _take_machine_lock(self) -> None:
        if self._machine_lock is not None:
            return
        descriptor = os.open(MACHINE_LOCK, os.O_RDWR | os.O_CREAT, 0o666)

        def taken() -> bool:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not _poll(taken, MACHINE_LOCK_TIMEOUT):
            os.close(descriptor)
            raise SlurmError(f"another Slurm cluster held {MACHINE_LOCK} for {MACHINE_LOCK_TIMEOUT:g} s")
        self._machine_lock = descriptor

    def _start_daemons(self) -> None:
        for name in ("etc", "state", "spool"):
            (self.base_dir / name).mkdir(parents=True, exist_ok=True)
        # munged refuses a socket below any directory not traversable by all; pytest's
        # tmp dirs are private (0700), so the socket then goes to its own dir in /tmp.
        if all(os.stat(parent).st_mode & 0o001 for parent in self.base_dir.parents):
            self.base_dir.chmod(0o755)
            self.munge_dir.mkdir(exist_ok=True)
        else:
            self.munge_dir = Path(tempfile.mkdtemp(prefix="fructosa-munge-"))
        self.munge_dir.chmod(0o755)
        key = self.munge_dir / "munge.key"
        subprocess.run(["mungekey", "-c", "-f", "-k", str(key)], check=True, capture_output=True, timeout=30)
        socket_path = self.munge_dir / "munge.socket"
        self._munged.launch(
            [
                "munged", "-F", f"--socket={socket_path}", f"--key-file={key}",
                f"--pid-file={self.munge_dir / 'munged.pid'}", f"--log-file={self.munge_dir / 'munged.log'}",
                f"--seed-file={self.munge_dir / 'munged.seed'}",
            ],
            cwd=self.base_dir, env={},
        )  # fmt: skip
        self._munged.wait_ready(socket_path.exists, self.startup_timeout)
        self._write_config(socket_path)
        self._slurmctld.launch(["slurmctld", "-D"], cwd=self.base_dir, env=self.env)
        self._slurmd.launch(["slurmd", "-D"], cwd=self.base_dir, env=self.env)
        for process in (self._slurmctld, self._slurmd):
            process.wait_ready(self._node_idle, self.startup_timeout)

    def _write_config(self, munge_socket: Path) -> None:
        node = subprocess.run(["slurmd", "-C"], check=True, capture_output=True, text=True, timeout=30)
        node_line = node.stdout.splitlines()[0]  # NodeName=… CPUs=… RealMemory=…
        self.cpus = int(node_line.split("CPUs=")[1].split()[0])
        ctld_port, slurmd_port = free_ports(2)
        base = self.base_dir
        lines = [
            "ClusterName=fructosa",
            f"SlurmctldHost={self.hostname}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            f"StateSaveLocation={base / 'state'}",
            f"SlurmdSpoolDir={base / 'spool'}",
            f"SlurmctldPidFile={base / 'slurmctld.pid'}",
            f"SlurmdPidFile={base / 'slurmd.pid'}",
            f"SlurmctldLogFile={base / 'slurmctld.log'}",
            f"SlurmdLogFile={base / 'slurmd.log'}",
            "MailProg=/bin/true",
            f"ProctrackType=proctrack/{self.proctrack}",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerParameters=batch_sched_delay=0",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.jobcomp_path}",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            f"{node_line} NodeAddr=127.0.0.1",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")
        if self.proctrack == "cgroup":
            (self.conf_path.parent / "cgroup.conf").write_text("CgroupPlugin=autodetect\n")

    def _node_idle(self) -> bool:
        result = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=5)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def stop(self) -> None:
        """Cancel every job, wait for their steps to end, then stop the daemons.

        slurmd must outlive the job steps: SIGTERM while a step is finishing
        leaves slurmd and slurmstepd hung (see the recipe). Idempotent.
        """
        if self._slurmctld.running and self._slurmd.running:
            self.run("scancel", "--full", "--quiet", "-u", "root", check=False, timeout=10)
            if not _poll(lambda: not self.queue_ids() and not self.stepd_pids(), 10.0):
                for pid in self.stepd_pids():
                    _signal(pid, signal.SIGKILL)
        for process in (self._slurmd, self._slurmctld, self._munged):
            if process.running:
                os.kill(process.pid, signal.SIGTERM)
        for process in (self._slurmd, self._slurmctld, self._munged):
            process.stop(timeout=10.0)
        for pid in self.stepd_pids():  # never leave one of ours behind
            _signal(pid, signal.SIGKILL)
        if self.proctrack == "cgroup":
            _remove_cgroup_tree(CGROUP_FREEZER / f"slurm_{self.hostname}")
        if not self.munge_dir.is_relative_to(self.base_dir):
            shutil.rmtree(self.munge_dir, ignore_errors=True)
        if self._machine_lock is not None:  # last: the next cluster starts on a clean machine
            os.close(self._machine_lock)
            self._machine_lock = None

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- client commands -----------------------------------------------------

    def run(self, *argv: str, check: bool = True, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        """A Slurm client command against this cluster; raises SlurmError when ``check`` and it fails."""
        result = subprocess.run(
            argv, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise SlurmError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}\n{self.logs()}")
        return result

    def sbatch(self, wrap: str, *options: str) -> str:
        """Submit ``sbatch --wrap`` and return the job id (output under base_dir)."""
        output = str(self.base_dir / "slurm-%j.out")
        return self.run("sbatch", "--parsable", "-o", output, *options, "--wrap", wrap).stdout.strip().split(";")[0]

    def queue_ids(self) -> list[str]:
        """Ids of the jobs slurmctld still knows as pending or running."""
        return self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()

    def job_state(self, job: str) -> str:
        """``RUNNING``, ``PENDING``…, or ``GONE`` once squeue forgot it."""
        result = self.run("squeue", "-h", "-j", job, "-o", "%T", check=False)
        return result.stdout.strip() or "GONE"

    def wait_state(self, job: str, states: tuple[str, ...], timeout: float = 15.0) -> str:
        """Poll until ``job`` is in one of ``states``; SlurmError with the logs otherwise."""
        seen: list[str] = []

        def reached() -> bool:
            seen.append(self.job_state(job))
            return seen[-1] in states

        if not _poll(reached, timeout):
            raise SlurmError(f"job {job} not {'/'.join(states)} after {timeout} s (last {seen[-1:]})\n{self.logs()}")
        return seen[-1]

    def wait_accounted(self, job: str, timeout: float = 15.0) -> None:
        """Poll until the jobcomp file has the finished job (``sacct -c`` can see it)."""

        def accounted() -> bool:
            return f"JobId={job} " in (self.jobcomp_path.read_text() if self.jobcomp_path.exists() else "")

        if not _poll(accounted, timeout):
            raise SlurmError(f"job {job} not in {self.jobcomp_path} after {timeout} s\n{self.logs()}")

    def stepd_pids(self) -> list[int]:
        """The slurmstepd processes of *this* cluster (our SLURM_CONF in their environment)."""
        marker = f"SLURM_CONF={self.conf_path}".encode()
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                if Path("/proc", name, "comm").read_bytes().strip() != b"slurmstepd":
                    continue
                if marker in Path("/proc", name, "environ").read_bytes().split(b"\0"):
                    pids.append(int(name))
            except OSError:
                continue
        return pids

    def logs(self) -> str:
        """The daemons' log tails, for failure messages."""
        return "\n".join(
            f"--- {path.name}:\n{tail(path, 15)}"
            for path in (self.base_dir / "slurmctld.log", self.base_dir / "slurmd.log")
        )


def _poll(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition`` came true within ``timeout`` (callers decide what a timeout means)."""
    try:
        wait_for(condition, timeout, interval=POLL_INTERVAL)
    except AssertionError:
        return False
    return True


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _remove_cgroup_tree(root: Path) -> None:
    """rmdir Slurm's leftover (empty) cgroup directories, deepest first."""
    if not root.is_dir():
        return
    for current, _subdirs, _files in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(current)
        except OSError:
            pass  # still in use: slurmd's next start reuses it
