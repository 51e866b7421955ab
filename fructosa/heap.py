"""Giving the C heap's free memory back to the system, once a daemon has settled.

Start-up (imports, compiling modules when no bytecode cache is written,
parsing the configuration, building the sensors) leaves several hundred KB
of freed but still resident memory in glibc's heap: free chunks below the
top of the heap, which ``free()`` alone never returns. ``malloc_trim(0)``
returns every free page of it. Called once after start-up and after a
reload, never per tick.
"""

from __future__ import annotations

import sys


def give_back_free_heap() -> bool:
    """``malloc_trim(0)`` on glibc (Linux); elsewhere, or when it cannot be
    called, nothing. Returns whether it ran."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # ~0.4 MB, less than malloc_trim gives back (about 0.9 MB for lagent)

        trim = ctypes.CDLL(None).malloc_trim  # absent from musl and other libcs: AttributeError
    except (ImportError, OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
