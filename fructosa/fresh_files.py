"""Temporary files of a fresh random name, for atomic replacement by rename.

What :func:`tempfile.mkstemp` does, in a few lines: ``tempfile`` imports
``shutil``, ``random`` and, through ``shutil``, ``bz2`` and ``lzma`` (about
0.8 MB of lagent's resident memory), and the spool and the status file only
ever need this one call of it.
"""

from __future__ import annotations

import os

ATTEMPTS = 100
"""Names tried before giving up (each collision is a 1 in 2**48 chance)."""

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def create_fresh(directory: str | os.PathLike[str], prefix: str, suffix: str) -> tuple[int, str]:
    """(descriptor, path) of a new, empty file ``directory/prefix<random>suffix``, mode 0600.

    Created exclusively (``O_CREAT | O_EXCL``, never through a symlink), as
    :func:`tempfile.mkstemp`: nothing planted at that name can be written through.
    Raises OSError (FileExistsError after :data:`ATTEMPTS` collisions).
    """
    for _ in range(ATTEMPTS):
        path = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(path, _FLAGS, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no fresh temporary name in {directory} after {ATTEMPTS} attempts")
