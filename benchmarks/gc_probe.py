"""Diagnostics: run lmaster (``fructosa.programs.master_main``) with a
``gc.callbacks`` hook that records every garbage collection (generation,
duration, objects collected) and writes them as JSON to ``$GC_PROBE_OUT`` at
exit. Used by the profile step to tell GC pauses from other stalls; the
measured benchmarks run the plain ``lmaster`` script.

    GC_PROBE_OUT=gc.json python -m benchmarks.gc_probe -c lmaster.conf -p pid start -f

``GC_PROBE_THRESHOLDS=100000,50,100`` sets ``gc.set_threshold`` first, and
in place of the thresholds lmaster sets once it runs (an experiment: how
lmaster does with more or fewer collections).

Census of the cyclic garbage: SIGUSR1 starts it (``gc.DEBUG_SAVEALL``: what
the collector finds unreachable is kept in ``gc.garbage`` instead of freed),
SIGUSR2 ends it with one full collection and counts what was found by type;
the counts go into the JSON as ``census``. Each type listed there was part
of a reference cycle, which only a collection frees.

Slow callbacks: every event-loop callback (a task's step included) that
runs longer than ``GC_PROBE_SLOW_MS`` (default 20) ms is listed in the JSON
as ``slow`` (when, how long, which), to tell lmaster's own stalls from
delays elsewhere.
"""

from __future__ import annotations

import atexit
import collections
import gc
import json
import os
import signal
import sys
import time

from fructosa.programs import master_main

_events: list[dict] = []
_started: dict[int, float] = {}
_census: dict = {}
_slow: list[dict] = []


def _describe(handle: object) -> str:
    """Which callback: a task's coroutine by name (a task's step shows only as its wakeup)."""
    task = getattr(getattr(handle, "_callback", None), "__self__", None)
    get_coro = getattr(task, "get_coro", None)
    if get_coro is not None:
        coroutine = get_coro()
        return f"task {task.get_name()}: {getattr(coroutine, '__qualname__', coroutine)}"[:300]  # type: ignore[union-attr]
    return repr(handle)[:300]


def _time_callbacks(threshold_ms: float) -> None:
    """Wrap ``asyncio.events.Handle._run`` to list the callbacks slower than ``threshold_ms``."""
    import asyncio.events

    run = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        began = time.perf_counter()
        run(handle)
        spent = 1000 * (time.perf_counter() - began)
        if spent > threshold_ms:
            _slow.append({"at": time.time(), "ms": spent, "callback": _describe(handle)})

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]


def _callback(phase: str, info: dict) -> None:
    if _census.get("collecting"):
        return  # the census's own collections are not lmaster's
    generation = info["generation"]
    if phase == "start":
        _started[generation] = time.perf_counter()
    else:
        began = _started.pop(generation, None)
        if began is not None:
            _events.append({"at": time.time(), "generation": generation,
                            "ms": 1000 * (time.perf_counter() - began), "collected": info["collected"]})  # fmt: skip


def _collect() -> None:
    _census["collecting"] = True
    try:
        gc.collect()
    finally:
        _census["collecting"] = False


def _census_start(_signum: int, _frame: object) -> None:
    _collect()  # what was garbage before the census does not count
    del gc.garbage[:]
    _census["started"] = time.time()
    gc.set_debug(gc.DEBUG_SAVEALL)


def _census_end(_signum: int, _frame: object) -> None:
    if "started" not in _census or "ended" in _census:
        return
    _collect()
    gc.set_debug(0)
    found = gc.garbage[:]
    del gc.garbage[:]
    _census["ended"] = time.time()
    _census["objects"] = len(found)
    types = collections.Counter(f"{type(item).__module__}.{type(item).__qualname__}" for item in found)
    _census["types"] = dict(types.most_common(25))
    del found
    tracked = gc.get_objects(2)  # what a full collection walks (the frozen objects aside)
    _census["old_generation"] = len(tracked)
    kinds = collections.Counter(f"{type(item).__module__}.{type(item).__qualname__}" for item in tracked)
    _census["old_generation_types"] = dict(kinds.most_common(25))
    _census["frozen"] = gc.get_freeze_count()
    del tracked, kinds
    _collect()


def _write() -> None:
    path = os.environ.get("GC_PROBE_OUT")
    if path:
        with open(path, "w", encoding="utf-8") as stream:
            json.dump({"events": _events, "thresholds": gc.get_threshold(), "census": _census,
                       "frozen": gc.get_freeze_count(), "slow": _slow[-1000:]}, stream)  # fmt: skip


if __name__ == "__main__":
    thresholds = os.environ.get("GC_PROBE_THRESHOLDS")
    if thresholds:
        gc.set_threshold(*(int(value) for value in thresholds.split(",")))
        try:  # what lmaster sets once it runs, if it sets anything
            from fructosa.master import lmaster

            lmaster.GC_THRESHOLDS = gc.get_threshold()
        except (ImportError, AttributeError):
            pass
    gc.callbacks.append(_callback)
    _time_callbacks(float(os.environ.get("GC_PROBE_SLOW_MS", "20")))
    signal.signal(signal.SIGUSR1, _census_start)
    signal.signal(signal.SIGUSR2, _census_end)
    atexit.register(_write)
    sys.exit(master_main(sys.argv[1:]))
