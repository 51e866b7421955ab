"""The disk spool: order, acknowledgements, restarts, torn records, size bound, other users."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fructosa.spool import SEGMENT_SUFFIX, Spool, SpoolError


def drain(spool: Spool) -> list[bytes]:
    out = []
    while (record := spool.read_next()) is not None:
        record_id, payload = record
        out.append(payload)
        spool.ack(record_id)
    return out


def test_fifo_across_segments_and_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10 << 20, segment_bytes=100)
    payloads = [f"record {i}".encode() * (i % 5 + 1) for i in range(50)]
    for payload in payloads:
        spool.append(payload)
    assert len(list(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))) > 5
    first = [spool.read_next() for _ in range(10)]
    for record_id, _ in first:
        spool.ack(record_id)
    spool.close()
    reopened = Spool(tmp_path, max_bytes=10 << 20, segment_bytes=100)
    assert len(reopened) == 40
    assert drain(reopened) == payloads[10:]
    assert len(reopened) == 0 and not reopened.unread()
    assert list(tmp_path.glob(f"*{SEGMENT_SUFFIX}")) == []


def test_rewind_hands_out_unacknowledged_records_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(5):
        spool.append(bytes([i]))
    a, b, c = (spool.read_next() for _ in range(3))
    spool.ack(b[0])  # out of order: a is still in flight
    spool.rewind()
    assert drain(spool) == [b"\x00", b"\x02", b"\x03", b"\x04"]  # b was acknowledged
    assert len(spool) == 0 and not spool.unread()


def test_torn_last_record_is_skipped_not_fatal(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        spool.append(b"payload-%d" % i)
    spool.close()
    (segment,) = tmp_path.glob(f"*{SEGMENT_SUFFIX}")
    with open(segment, "ab") as stream:
        stream.write(b"FR\x00\x00\x00\x50garbage")  # a header promising 80 bytes, then a crash
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert reopened.skipped_bytes == 13
    reopened.append(b"after restart")
    assert drain(reopened) == [b"payload-0", b"payload-1", b"payload-2", b"after restart"]


def test_corrupt_record_ends_its_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        spool.append(b"payload-%d" % i)
    spool.close()
    (segment,) = tmp_path.glob(f"*{SEGMENT_SUFFIX}")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip a bit in the middle record
    segment.write_bytes(bytes(data))
    assert drain(Spool(tmp_path, max_bytes=1 << 20)) == [b"payload-0"]


def test_full_spool_drops_oldest_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=4096, segment_bytes=1024)
    for i in range(100):
        spool.append(i.to_bytes(2, "big") * 50)  # 110 bytes a record
    on_disk = sum(path.stat().st_size for path in tmp_path.glob(f"*{SEGMENT_SUFFIX}"))
    assert on_disk <= 4096 and spool.bytes == on_disk
    kept = drain(spool)
    assert spool.dropped + len(kept) == 100
    assert spool.dropped > 0
    assert [int.from_bytes(p[:2], "big") for p in kept] == list(range(spool.dropped, 100))


def test_records_survive_kill_9(tmp_path: Path) -> None:
    """A writer killed mid-stream leaves every record it finished, and no crash on reopen."""
    code = (
        "import sys; from fructosa.spool import Spool\n"
        f"s = Spool({str(tmp_path)!r}, max_bytes=1 << 30)\n"
        "i = 0\n"
        "while True:\n"
        "    s.append(b'%08d' % i * 100)\n"
        "    i += 1\n"
        "    if i == 2000: print('ready', flush=True)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    records = drain(Spool(tmp_path, max_bytes=1 << 30))
    assert len(records) >= 2000
    assert [int(r[:8]) for r in records] == list(range(len(records)))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=300), st.booleans()), max_size=60))
def test_every_appended_record_comes_out_once_in_order(tmp_path_factory, ops: list[tuple[bytes, bool]]) -> None:
    directory = tmp_path_factory.mktemp("spool")
    spool = Spool(directory, max_bytes=1 << 20, segment_bytes=512)
    expected, seen = [], []
    for payload, reopen in ops:
        spool.append(payload)
        expected.append(payload)
        if reopen:
            record = spool.read_next()
            if record:
                spool.ack(record[0])
                seen.append(record[1])
            spool.close()
            spool = Spool(directory, max_bytes=1 << 20, segment_bytes=512)
    assert seen + drain(spool) == expected


# -- other users and planted links ----------------------------------------------------


def test_world_writable_directory_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(SpoolError, match="world-writable without the sticky bit"):
        Spool(directory, max_bytes=1 << 20)
    assert not (directory / ".lock").exists()


def test_world_writable_sticky_directory_is_used_with_a_warning(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    directory.chmod(0o1777)
    spool = Spool(directory, max_bytes=1 << 20)
    try:
        assert len(spool.warnings) == 1 and "world-writable (mode 1777)" in spool.warnings[0]
        spool.append(b"still works")
        assert drain(spool) == [b"still works"]
    finally:
        spool.close()
    private = Spool(tmp_path / "private", max_bytes=1 << 20)
    assert private.warnings == []
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700
    private.close()


def test_check_reports_a_spool_it_would_refuse_but_not_one_it_only_warns_about(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    conf = tmp_path / "lagent.conf"
    conf.write_text(f"[lmaster]\nhost = 127.0.0.1\n\n[lagent]\nspool dir = {directory}\n\n[logging]\nfilename = None\n")
    lagent = str(Path(sys.executable).parent / "lagent")
    directory.chmod(0o777)
    result = subprocess.run([lagent, "-c", str(conf), "check"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"[lagent] spool directory {directory} is world-writable without the sticky bit" in result.stderr
    directory.chmod(0o1777)  # ExecStartPre runs check: a warning must not stop the unit
    result = subprocess.run([lagent, "-c", str(conf), "check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_symlink_named_like_a_segment_is_removed_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious, and not a record")
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o700)
    (directory / f"{1:016d}{SEGMENT_SUFFIX}").symlink_to(victim)
    (directory / "cursor.tmp").symlink_to(victim)
    spool = Spool(directory, max_bytes=1 << 20)
    spool.append(b"mine")
    spool.close()
    assert victim.read_bytes() == b"precious, and not a record"
    reopened = Spool(directory, max_bytes=1 << 20)
    assert drain(reopened) == [b"mine"]
    reopened.close()
