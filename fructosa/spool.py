"""A bounded on-disk FIFO of records that survives restarts and ``kill -9``.

Both daemons spool here when their downstream is away: the agent keeps
batches for lmaster, the master keeps datapoints for carbon. Records are
appended to numbered segment files (``0000000000000001.seg`` …) and consumed
oldest first; a segment is deleted once every record in it is acknowledged.

Record layout: ``b"FR" | length: uint32 BE | crc32(payload): uint32 BE | payload``.
A record whose header or payload is cut short or whose CRC does not match
(a write torn by ``kill -9`` or a crash) ends its segment: the rest of that
file is skipped with a warning, never a crash.

Durability: every record is handed to the kernel with one ``write()`` before
``append`` returns, so it survives the process being killed; ``fsync`` runs
at most every ``sync_interval`` seconds and on close (power loss may lose
that last fraction of a second). The read position (``cursor``) is saved
lazily: after a crash a few already-delivered records may be replayed, which
the receivers tolerate (the master drops duplicate batches; carbon
overwrites the same path and timestamp).

When the spool exceeds ``max_bytes`` the oldest segment is deleted; its
unconsumed records are counted in ``dropped`` and logged. That is the last
resort: lmaster stops reading agents' batches well before (its flow watches
:attr:`Spool.fill`), so what it acknowledged is not dropped to make room for
more; what can still fill it is lmaster's own datapoints (dropped by the flow
first) and a full disk, where ``append`` raises and the caller keeps the
record elsewhere.

Safety: the daemons usually run as root, so no file in the spool is opened
through a symlink (``O_NOFOLLOW``; a symlink named like a segment is
removed, not read), and the directory's permissions are checked
(:func:`directory_exposure`): a
world-writable directory without the sticky bit is refused, since any local
user could delete, replace or inject records that would then be relayed as
this host's data; a world-writable one with the sticky bit (like ``/tmp``)
is used with a warning in :attr:`Spool.warnings`, since others can still
fill it or take the names of future segments.
"""

from __future__ import annotations

import binascii
import errno
import fcntl
import logging
import os
import stat
import struct
import time
from collections import OrderedDict
from typing import BinaryIO

from .fresh_files import create_fresh

log = logging.getLogger(__name__)

MAGIC = b"FR"
_HEADER = struct.Struct("!2sII")
HEADER_SIZE = _HEADER.size
SEGMENT_SUFFIX = ".seg"
CURSOR_FILE = "cursor"
LOCK_FILE = ".lock"

RecordId = tuple[int, int]
"""(segment number, offset of the record's header in that segment)."""


class _Segment:
    """One segment file of the spool: its number, path, bytes and records written.

    A plain slotted class (not a dataclass, not a configuration record): the spool sits below the
    configuration package, which relay-only code never imports."""

    __slots__ = ("number", "path", "size", "records")

    def __init__(self, number: int, path: str, size: int, records: int) -> None:
        self.number = number
        self.path = path
        self.size = size
        self.records = records

    def __repr__(self) -> str:
        return f"_Segment({self.number}, {self.path!r}, size={self.size}, records={self.records})"

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


class SpoolError(OSError):
    """The spool directory cannot be used (reported at start as one line)."""


_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def directory_exposure(directory: str | os.PathLike[str]) -> tuple[bool, str | None]:
    """(refuse, why) for a spool directory other users can write into.

    ``(True, reason)``: world-writable without the sticky bit, unusable.
    ``(False, reason)``: world-writable with the sticky bit, usable with a
    warning. ``(False, None)``: fine, or it does not exist (yet).
    """
    try:
        mode = os.stat(directory).st_mode
    except OSError:
        return False, None
    if not mode & stat.S_IWOTH:
        return False, None
    shown = f"{stat.S_IMODE(mode):04o}"
    if not mode & stat.S_ISVTX:
        return True, (
            f"spool directory {directory} is world-writable without the sticky bit (mode {shown}): any user "
            "could delete or replace its records; refusing it (make it mode 0700, owned by the daemon's user)"
        )
    return False, (
        f"spool directory {directory} is world-writable (mode {shown}): other users can fill it or take the "
        "names of future segments; give the daemon a directory of its own (mode 0700)"
    )


class Spool:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int,
        *,
        segment_bytes: int | None = None,
        sync_interval: float = 1.0,
    ) -> None:
        self.directory = os.fspath(directory)
        """The spool's directory (a str: os.path, not pathlib, which would bring urllib.parse and ipaddress)."""
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, min(4 << 20, max_bytes // 8))
        self.sync_interval = sync_interval
        self.dropped = 0
        self.skipped_bytes = 0
        self.warnings: list[str] = []
        """Problems worth a log line at start (the daemon logs them once logging is set up)."""
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        except OSError as error:
            raise SpoolError(error.errno, f"spool directory {self.directory}: {error.strerror or error}") from None
        refuse, exposure = directory_exposure(self.directory)
        if refuse:
            raise SpoolError(errno.EPERM, exposure)
        if exposure:
            self.warnings.append(exposure)
        try:
            lock_path = os.path.join(self.directory, LOCK_FILE)
            self._lock_fd: int | None = os.open(lock_path, os.O_RDWR | os.O_CREAT | _NO_FOLLOW, 0o600)
        except OSError as error:
            raise SpoolError(error.errno, f"spool directory {self.directory}: {error.strerror or error}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolError(errno.EBUSY, f"spool directory {self.directory} is in use by another process") from None
        try:
            self._segments: list[_Segment] = self._recover()
        except SpoolError:
            os.close(self._lock_fd)
            raise
        self._read_segment, self._read_offset = self._load_cursor()
        self._commit: RecordId = (self._read_segment, self._read_offset)
        self._inflight: OrderedDict[RecordId, int] = OrderedDict()
        self._acked_ahead: set[RecordId] = set()
        self._pending_records = self._count_pending()
        self._append_fd: int | None = None
        self._last_sync = time.monotonic()
        self._cursor_dirty = False
        self._read_file: BinaryIO | None = None
        self._read_file_number = 0

    # -- recovery ------------------------------------------------------------

    def _recover(self) -> list[_Segment]:
        segments = []
        for name in sorted(name for name in os.listdir(self.directory) if name.endswith(SEGMENT_SUFFIX)):
            try:
                number = int(name.removesuffix(SEGMENT_SUFFIX))
            except ValueError:
                continue
            path = os.path.join(self.directory, name)
            if os.path.islink(path):  # planted by someone else: never followed, removed
                log.warning("spool %s: %s is a symbolic link, not a segment; removed", self.directory, name)
                os.unlink(path)
                continue
            if not os.path.isfile(path):
                raise SpoolError(errno.EEXIST, f"spool directory {self.directory}: {name} is not a regular file")
            size, records = self._validate(path)
            segments.append(_Segment(number, path, size, records))
        return segments

    def _validate(self, path: str) -> tuple[int, int]:
        """Size and record count of the valid prefix; truncates a torn tail."""
        with _open_no_follow(path, "rb") as stream:
            data = stream.read()
        offset = records = 0
        while offset < len(data):
            record_end = _record_end(data, offset)
            if record_end is None:
                break
            offset, records = record_end, records + 1
        if offset < len(data):
            skipped = len(data) - offset
            self.skipped_bytes += skipped
            log.warning(
                "spool %s: %d bytes at the end of %s are not a complete record "
                "(torn by a crash?); skipped",
                self.directory, skipped, os.path.basename(path),
            )  # fmt: skip
            with _open_no_follow(path, "r+b") as stream:
                stream.truncate(offset)
        return offset, records

    def _load_cursor(self) -> RecordId:
        first = (self._segments[0].number, 0) if self._segments else (1, 0)
        try:
            with _open_no_follow(os.path.join(self.directory, CURSOR_FILE), "rb") as stream:
                segment, offset = (int(word) for word in stream.read(100).split())
        except (OSError, ValueError):
            return first
        known = {s.number: s for s in self._segments}
        if segment in known and _is_record_boundary(known[segment].path, offset, known[segment].size):
            return segment, offset
        return first

    def _count_pending(self) -> int:
        pending = 0
        for segment in self._segments:
            if segment.number > self._read_segment:
                pending += segment.records
            elif segment.number == self._read_segment:
                pending += _count_records(segment.path, self._read_offset, segment.size)
        return pending

    # -- writing ---------------------------------------------------------------

    @property
    def bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    @property
    def fill(self) -> float:
        """How full the spool is: 0.0 empty, 1.0 at ``max_bytes`` (the next record drops the oldest)."""
        return self.bytes / self.max_bytes

    def __len__(self) -> int:
        """Records not yet acknowledged (read or not)."""
        return self._pending_records

    def unread(self) -> bool:
        """True when ``read_next`` has a record to give."""
        if not self._segments:
            return False
        last = self._segments[-1]
        return (self._read_segment, self._read_offset) < (last.number, last.size)

    def append(self, payload: bytes) -> None:
        record = _HEADER.pack(MAGIC, len(payload), binascii.crc32(payload)) + payload
        if not self._segments or self._segments[-1].size + len(record) > self.segment_bytes:
            self._start_segment()
        segment = self._segments[-1]
        if self._append_fd is None:
            self._append_fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NO_FOLLOW, 0o600)
        try:
            written = os.write(self._append_fd, record)
            if written != len(record):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(record)} bytes)")
        except OSError as error:  # disk full: no torn record is left behind, the caller keeps the payload
            os.ftruncate(self._append_fd, segment.size)
            raise SpoolError(error.errno or errno.EIO, f"spool {self.directory}: {error.strerror or error}") from None
        segment.size += len(record)
        segment.records += 1
        self._pending_records += 1
        if self.bytes > self.max_bytes:
            self._drop_oldest()
        self._maybe_sync()

    def _start_segment(self) -> None:
        if self._append_fd is not None:
            os.fsync(self._append_fd)
            os.close(self._append_fd)
            self._append_fd = None
        number = self._segments[-1].number + 1 if self._segments else max(1, self._read_segment)
        path = os.path.join(self.directory, f"{number:016d}{SEGMENT_SUFFIX}")
        self._segments.append(_Segment(number, path, 0, 0))

    def _drop_oldest(self) -> None:
        while self.bytes > self.max_bytes and len(self._segments) > 1:
            oldest = self._segments.pop(0)
            unconsumed = oldest.records
            if oldest.number == self._commit[0]:
                unconsumed = _count_records(oldest.path, self._commit[1], oldest.size)
            elif oldest.number < self._commit[0]:
                unconsumed = 0
            _unlink_if_there(oldest.path)
            self.dropped += unconsumed
            self._pending_records -= unconsumed
            for record_id in [rid for rid in self._inflight if rid[0] == oldest.number]:
                del self._inflight[record_id]
            self._acked_ahead = {rid for rid in self._acked_ahead if rid[0] != oldest.number}
            following = (self._segments[0].number, 0)
            self._commit = max(self._commit, following)
            if (self._read_segment, self._read_offset) < following:
                self._read_segment, self._read_offset = following
            self._cursor_dirty = True
            log.warning(
                "spool %s full (%d bytes): dropped the oldest %d records (data already acknowledged is lost);"
                " %d dropped in total",
                self.directory, self.max_bytes, unconsumed, self.dropped,
            )  # fmt: skip

    def _maybe_sync(self) -> None:
        now = time.monotonic()
        if now - self._last_sync >= self.sync_interval:
            self.sync()

    def sync(self) -> None:
        """fsync the segment being written and save the cursor."""
        self._last_sync = time.monotonic()
        if self._append_fd is not None:
            os.fsync(self._append_fd)
        if self._cursor_dirty:
            self._save_cursor()

    def _save_cursor(self) -> None:
        # A fresh name each time (O_CREAT | O_EXCL): nothing planted can be written through.
        fd, temporary = create_fresh(self.directory, f".{CURSOR_FILE}.", ".tmp")
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(f"{self._commit[0]} {self._commit[1]}\n".encode())
            os.replace(temporary, os.path.join(self.directory, CURSOR_FILE))
        except BaseException:
            _unlink_if_there(temporary)
            raise
        self._cursor_dirty = False

    # -- reading -------------------------------------------------------------

    def read_next(self) -> tuple[RecordId, bytes] | None:
        """The oldest record not yet handed out, or None. Call ``ack`` once it
        is delivered; ``rewind`` hands out the unacknowledged ones again."""
        for segment in self._segments:
            if segment.number < self._read_segment:
                continue
            if segment.number > self._read_segment:
                self._read_segment, self._read_offset = segment.number, 0
            if self._read_offset >= segment.size:
                continue
            while self._read_offset < segment.size:
                stream = self._reader(segment)
                stream.seek(self._read_offset)
                _, length, _ = _HEADER.unpack(stream.read(HEADER_SIZE))
                record_id = (segment.number, self._read_offset)
                self._read_offset += HEADER_SIZE + length
                if record_id in self._acked_ahead:
                    continue  # acknowledged before a rewind: not again
                self._inflight[record_id] = HEADER_SIZE + length
                return record_id, stream.read(length)
        return None

    def _reader(self, segment: _Segment) -> BinaryIO:
        """An open file on the segment being read (kept open between reads)."""
        if self._read_file is None or self._read_file_number != segment.number:
            if self._read_file is not None:
                self._read_file.close()
            self._read_file = _open_no_follow(segment.path, "rb")
            self._read_file_number = segment.number
        return self._read_file

    def ack(self, record_id: RecordId) -> None:
        if self._inflight.pop(record_id, None) is None:
            return  # dropped while in flight, or acknowledged twice
        self._pending_records -= 1
        new_commit = next(iter(self._inflight), (self._read_segment, self._read_offset))
        if record_id > new_commit:
            self._acked_ahead.add(record_id)
        if new_commit != self._commit:
            self._commit = new_commit
            self._cursor_dirty = True
            self._acked_ahead = {rid for rid in self._acked_ahead if rid >= new_commit}
            self._delete_consumed_segments()
        self._maybe_sync()

    def rewind(self) -> None:
        """Hand out the unacknowledged records again (the connection broke)."""
        self._read_segment, self._read_offset = self._commit
        self._inflight.clear()

    def _delete_consumed_segments(self) -> None:
        while len(self._segments) > 1 and self._segments[0].number < self._commit[0]:
            _unlink_if_there(self._segments.pop(0).path)
        if self._segments and self._commit == (self._segments[-1].number, self._segments[-1].size):
            # Everything consumed: start over in a fresh segment next time.
            last = self._segments.pop()
            if self._append_fd is not None:
                os.close(self._append_fd)
                self._append_fd = None
            _unlink_if_there(last.path)
            self._commit = (last.number + 1, 0)
            self._read_segment, self._read_offset = self._commit

    def fds(self) -> list[int]:
        """Descriptors to keep open when daemonizing (the directory lock)."""
        return [self._lock_fd] if self._lock_fd is not None else []

    def close(self) -> None:
        if self._read_file is not None:
            self._read_file.close()
            self._read_file = None
        self._cursor_dirty = True
        self.sync()
        if self._append_fd is not None:
            os.close(self._append_fd)
            self._append_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _unlink_if_there(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _open_no_follow(path: str, mode: str) -> BinaryIO:
    """A file of the spool opened in ``mode`` ("rb" or "r+b"), never through a symlink."""
    flags = os.O_RDONLY if mode == "rb" else os.O_RDWR
    return os.fdopen(os.open(path, flags | _NO_FOLLOW), mode)


def _record_end(data: bytes, offset: int) -> int | None:
    """Offset after the valid record at ``offset``, or None if it is torn or corrupt."""
    if offset + HEADER_SIZE > len(data):
        return None
    magic, length, crc = _HEADER.unpack_from(data, offset)
    end = offset + HEADER_SIZE + length
    if magic != MAGIC or end > len(data) or binascii.crc32(data[offset + HEADER_SIZE : end]) != crc:
        return None
    return end


def _is_record_boundary(path: str, offset: int, size: int) -> bool:
    with _open_no_follow(path, "rb") as stream:
        data = stream.read(size)
    position = 0
    while position < offset:
        next_position = _record_end(data, position)
        if next_position is None:
            return False
        position = next_position
    return position == offset


def _count_records(path: str, start: int, end: int) -> int:
    with _open_no_follow(path, "rb") as stream:
        data = stream.read(end)
    count, offset = 0, start
    while offset < end:
        next_offset = _record_end(data, offset)
        if next_offset is None:
            break
        count, offset = count + 1, next_offset
    return count
