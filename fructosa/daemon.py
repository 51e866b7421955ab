"""Pidfiles, daemonizing and the start/stop/status actions of both daemons.

The pidfile is held with ``flock`` for the daemon's whole life: the kernel
releases the lock when the process dies, even by ``kill -9``, so "is it
running?" is answered by the lock, never by a pid that may have been reused.

Daemons often run as root and write into directories others may reach
(``/run``, a shared ``/var/tmp``): the pidfile is opened with ``O_NOFOLLOW``
and must be a regular file, and the status file is written to a fresh,
unpredictably named temporary file (``O_CREAT | O_EXCL``) and renamed over
the old one, so a symlink planted at either name can never redirect a write.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import stat
import time
from collections.abc import Iterable, Iterator

from .fresh_files import create_fresh


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None) -> None:
        super().__init__(pid)
        self.pid = pid


class PidFile:
    """A locked pidfile; ``acquire`` before daemonizing so errors reach the terminal."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.stale_pid: int | None = None

    def acquire(self) -> None:
        """Lock and claim the pidfile; raises AlreadyRunning or OSError (also for a
        symlink or anything but a regular file at ``path``)."""
        fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(read_pid(self.path)) from None
        self.stale_pid = _parse_pid(os.pread(fd, 64, 0))
        self.fd = fd
        self.write_pid()

    def write_pid(self) -> None:
        """(Re)write our pid: after daemonizing the pid has changed."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None


def open_no_follow(path: str, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symlink, and anything but a regular file, at ``path``.

    ``O_NONBLOCK`` keeps a FIFO planted there from blocking the open; it is
    cleared again for the regular file.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"{path} is a symbolic link; refusing to follow it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def _parse_pid(data: bytes) -> int | None:
    try:
        pid = int(data.decode("ascii", "replace").strip() or "x")
    except ValueError:
        return None
    return pid if pid > 0 else None


def read_pid(path: str) -> int | None:
    try:
        fd = open_no_follow(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _parse_pid(os.pread(fd, 64, 0))
    finally:
        os.close(fd)


def running_pid(path: str) -> int | None:
    """The pid of the live daemon holding ``path``, or None (no file, or stale).

    A symlink or other non-regular file there is not a daemon's pidfile: None
    (so ``stop`` never signals a pid that someone else's file names).
    """
    try:
        fd = open_no_follow(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _parse_pid(os.pread(fd, 64, 0)) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited daemon whose
    parent, often a container's init, has not reaped it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def daemonize(pidfile: PidFile, keep_fds: Iterable[int]) -> None:
    """Detach (double fork, new session, umask 022, cwd /, stdio to /dev/null).

    The process that called ``start`` waits until the daemon has written its
    pid, so an init system (or a test) that reads the pidfile right after
    ``lagent start`` returns finds the daemon's pid, never its parent's.
    SIGTERM keeps its default until the event loop installs its own handler.
    """
    ready_read, ready_write = os.pipe()
    if os.fork() > 0:
        os.close(ready_write)
        with os.fdopen(ready_read, "rb") as ready:
            word = ready.read()
        # _exit: the parent must not run the daemon's cleanup (pidfile removal).
        os._exit(0 if word == b"ready" else 1)
    os.close(ready_read)
    import daemon  # python-daemon, only when detaching: lagent --foreground (systemd) never needs it

    context = daemon.DaemonContext(
        working_directory="/",
        umask=0o022,
        files_preserve=[pidfile.fd, ready_write, *keep_fds],
        signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None},
    )
    context.open()
    pidfile.write_pid()
    os.write(ready_write, b"ready")
    os.close(ready_write)


def stop(path: str, timeout: float) -> tuple[bool, str]:
    """SIGTERM the daemon and wait until it is gone. (ok, message)."""
    pid = running_pid(path)
    if pid is None:
        if os.path.exists(path):
            os.unlink(path)
            return True, f"not running (stale pidfile {path} removed)"
        return True, f"not running (no pidfile {path})"
    if pid < 0:
        return False, f"pidfile {path} is locked but holds no valid pid"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        return False, f"not allowed to signal pid {pid} (run as the daemon's user or root)"
    deadline = time.monotonic() + timeout
    while running_pid(path) is not None or process_alive(pid):
        if time.monotonic() > deadline:
            return False, f"pid {pid} did not stop within {timeout:g} s"
        time.sleep(0.05)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return True, f"stopped (pid {pid})"


def write_status(path: str, status: dict) -> None:
    """Atomically replace the status file a running daemon keeps for ``status``.

    The new content goes to a temporary file of a fresh random name next to
    ``path`` (created exclusively, never through a symlink), then is renamed
    over ``path``; rename replaces a symlink at ``path`` instead of following it.
    A reader therefore sees the old file or the new one, whole, never a mix.

    Encoded once, without indentation (only then does :mod:`json` use its C
    encoder, 4× faster than the pure-Python one) and written with one
    ``os.write``: no text-file object and its buffers for what is, for lagent,
    one short line every report. lmaster writes a row per agent from a worker
    thread, and the C encoder never lets go of the GIL: long lists are
    therefore encoded :data:`STATUS_ITEMS_PER_CHUNK` items at a time
    (:func:`status_json_chunks`), so the event loop gets the GIL between chunks.
    """
    directory, name = os.path.split(os.path.abspath(path))
    document = {"pid": os.getpid(), "written": time.time(), **status}
    if any(isinstance(value, list) and len(value) > STATUS_ITEMS_PER_CHUNK for value in status.values()):
        pieces: Iterable[str] = status_json_chunks(document)
    else:
        pieces = (json.dumps(document, separators=COMPACT),)
    fd, temporary = create_fresh(directory, f".{name}.", ".tmp")
    try:
        try:
            os.fchmod(fd, 0o644)  # readable by ``status`` run as another user, whatever the umask
            _write_pieces(fd, pieces)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


STATUS_WRITE_SIZE = 1 << 16
"""Bytes of encoded pieces gathered for one ``os.write``."""


def _write_pieces(fd: int, pieces: Iterable[str]) -> None:
    """Write the text ``pieces`` encoded, :data:`STATUS_WRITE_SIZE` bytes or so at a time: each write
    lets go of the GIL, and no copy of a large status is ever made whole."""
    pending: list[str] = []
    size = 0
    for piece in pieces:
        pending.append(piece)
        size += len(piece)
        if size >= STATUS_WRITE_SIZE:
            _write_all(fd, "".join(pending).encode("utf-8"))
            pending, size = [], 0
    if pending:
        _write_all(fd, "".join(pending).encode("utf-8"))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


STATUS_ITEMS_PER_CHUNK = 250
"""Items of a list in the status file encoded by one call of the C encoder (~1 ms)."""

COMPACT = (",", ":")
"""JSON separators without spaces."""


def status_json_chunks(status: dict) -> Iterator[str]:
    """``json.dumps(status, separators=(",", ":"))`` in pieces: each top-level value, and the
    lists among them :data:`STATUS_ITEMS_PER_CHUNK` items at a time."""
    yield "{"
    for index, (key, value) in enumerate(status.items()):
        yield f"{',' if index else ''}{json.dumps(str(key))}:"
        if isinstance(value, list):
            yield "["
            for start in range(0, len(value), STATUS_ITEMS_PER_CHUNK):
                chunk = json.dumps(value[start : start + STATUS_ITEMS_PER_CHUNK], separators=COMPACT)
                yield f"{',' if start else ''}{chunk[1:-1]}"
            yield "]"
        else:
            yield json.dumps(value, separators=COMPACT)
    yield "}"


def read_status(path: str, pid: int) -> str | None:
    """The report in the status file of the running daemon ``pid``, if it wrote one."""
    try:
        with open(path, encoding="utf-8") as stream:
            status = json.load(stream)
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict) or status.get("pid") != pid:
        return None
    age = time.time() - float(status.get("written", 0))
    return f"{status.get('report', '')}\n(status as of {age:.0f} s ago)"
