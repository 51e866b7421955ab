"""Diagnostics: run lmaster (``fructosa.programs.master_main``) with a
``gc.callbacks`` hook that records every garbage collection (generation,
duration, objects collected) and writes them as JSON to ``$GC_PROBE_OUT`` at
exit. Used by the profile step to tell GC pauses from other stalls; the
measured benchmarks run the plain ``lmaster`` script.

    GC_PROBE_OUT=gc.json python -m benchmarks.gc_probe -c lmaster.conf -p pid start -f

``GC_PROBE_THRESHOLDS=100000,50,100`` sets ``gc.set_threshold`` first (an
experiment: how much faster lmaster is with fewer collections).
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time

from fructosa.programs import master_main

_events: list[dict] = []
_started: dict[int, float] = {}


def _callback(phase: str, info: dict) -> None:
    generation = info["generation"]
    if phase == "start":
        _started[generation] = time.perf_counter()
    else:
        began = _started.pop(generation, None)
        if began is not None:
            _events.append({"at": time.time(), "generation": generation,
                            "ms": 1000 * (time.perf_counter() - began), "collected": info["collected"]})  # fmt: skip


def _write() -> None:
    path = os.environ.get("GC_PROBE_OUT")
    if path:
        with open(path, "w", encoding="utf-8") as stream:
            json.dump({"events": _events, "thresholds": gc.get_threshold()}, stream)


if __name__ == "__main__":
    thresholds = os.environ.get("GC_PROBE_THRESHOLDS")
    if thresholds:
        gc.set_threshold(*(int(value) for value in thresholds.split(",")))
    gc.callbacks.append(_callback)
    atexit.register(_write)
    sys.exit(master_main(sys.argv[1:]))
