"""Giving the C heap's free memory back to the system, once a daemon has settled.

Compiling modules at start-up (no bytecode cache to read: a read-only
install, ``PYTHONDONTWRITEBYTECODE``, the first start after an install that
wrote none) leaves about a megabyte of freed but still resident memory in
glibc's heap: free chunks below the top of the heap, which ``free()`` alone
never returns. ``malloc_trim(0)`` returns every free page of it. Called once
after start-up and after a reload, never per tick.

A start-up that read every module from its bytecode cache (a regular
install) leaves almost nothing there: the trim would give back less than
loading ``_ctypes`` (its library and the types below, ~0.2 MB) costs, so it
is skipped unless one of the program's modules was compiled by this process.

The call goes through ``_ctypes``, the C half of :mod:`ctypes`, with the two
C types it needs declared here: the :mod:`ctypes` package itself defines
dozens of types and helpers at import and would keep ~150 KB more of the
daemon's memory for this one call. Should ``_ctypes`` not offer what is used
here, the package is used after all.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from .selfstats import seconds_since_start

_trim: Callable[[int], int] | None = None
"""``malloc_trim``, looked up on first use."""


def _malloc_trim_from_ctypes_core() -> Callable[[int], int]:
    """``malloc_trim`` as a C function taking a ``size_t`` and returning an ``int``, from ``_ctypes`` alone
    (what ``ctypes.CDLL(None).malloc_trim`` with those ``argtypes`` and ``restype`` amounts to)."""
    import _ctypes

    class c_int(_ctypes._SimpleCData):  # noqa: N801  # ctypes' own names
        _type_ = "i"

    class c_size_t(_ctypes._SimpleCData):  # noqa: N801
        _type_ = "L"  # size_t is unsigned long on the platforms with malloc_trim (Linux, glibc)

    class CFunction(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL
        _restype_ = c_int

    class Process:
        """The running program and the libraries it has loaded (``ctypes.CDLL(None)``)."""

        _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)

    trim = CFunction(("malloc_trim", Process))  # absent from musl and other libcs: AttributeError
    trim.argtypes = (c_size_t,)
    return trim


def _malloc_trim_from_ctypes() -> Callable[[int], int]:
    import ctypes

    trim = ctypes.CDLL(None).malloc_trim  # absent from musl and other libcs: AttributeError
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def compiled_at_start_up(package: str = __name__.partition(".")[0]) -> bool:
    """Whether this process compiled a module of ``package`` from source: its bytecode cache is missing, or was
    written since the process started (unreadable ``/proc``: assumed so)."""
    try:
        started = time.time() - seconds_since_start()
    except (OSError, ValueError, IndexError):
        return True
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if not (name == package or name.startswith(package + ".")) or spec is None or not spec.origin:
            continue
        if not spec.origin.endswith(".py"):
            continue  # an extension or a module without source: nothing compiled
        try:
            if os.stat(spec.cached).st_mtime >= started - 1:  # the start is known to a clock tick; a second's margin
                return True
        except (OSError, TypeError):  # no cache file (or none can be named): compiled, not written
            return True
    return False


def give_back_free_heap() -> bool:
    """``malloc_trim(0)`` on glibc (Linux) when start-up compiled modules; elsewhere, after a start-up that read
    them all from bytecode, or when it cannot be called, nothing. Returns whether it ran."""
    global _trim
    if not sys.platform.startswith("linux"):
        return False
    if _trim is None and not compiled_at_start_up():
        return False
    if _trim is None:
        for find in (_malloc_trim_from_ctypes_core, _malloc_trim_from_ctypes):
            try:
                _trim = find()
                break
            except (ImportError, OSError, AttributeError, TypeError):
                continue
        else:
            return False
    _trim(0)
    return True
