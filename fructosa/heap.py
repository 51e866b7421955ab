"""Giving the C heap's free memory back to the system, once a daemon has settled.

Start-up (imports, compiling modules when no bytecode cache is written,
parsing the configuration, building the sensors) leaves several hundred KB
of freed but still resident memory in glibc's heap: free chunks below the
top of the heap, which ``free()`` alone never returns. ``malloc_trim(0)``
returns every free page of it. Called once after start-up and after a
reload, never per tick.

The call goes through ``_ctypes``, the C half of :mod:`ctypes`, with the two
C types it needs declared here: the :mod:`ctypes` package itself defines
dozens of types and helpers at import and would keep ~150 KB more of the
daemon's memory for this one call. Should ``_ctypes`` not offer what is used
here, the package is used after all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

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


def give_back_free_heap() -> bool:
    """``malloc_trim(0)`` on glibc (Linux); elsewhere, or when it cannot be
    called, nothing. Returns whether it ran."""
    global _trim
    if not sys.platform.startswith("linux"):
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
