"""lagent's threads scheduled as a batch job (Linux's SCHED_BATCH), not as interactive tasks.

Under the default policy a thread that wakes up preempts the one running on its core
whenever the scheduler thinks it waited long enough, at once. For lagent that means
two things on a compute node. Its event loop, waking for a tick, takes the core from
the job there and then. And its own threads preempt each other at every hand-off to a
sensor thread (the event loop wakes the thread, which preempts the loop only to find the
GIL taken and sleep again; the same when the thread hands its samples back): about ten
context switches where three would do, each a moment taken from the job.

A SCHED_BATCH thread keeps its share of the CPU (the same nice weight, the same time
slices) but never preempts on waking: it runs when the running task's slice ends or
that task sleeps. Nothing lagent does needs its wakeup served within the millisecond:
samples carry the time they are taken, and heartbeats are seconds apart.
"""

from __future__ import annotations

import os


def schedule_as_batch() -> bool:
    """Move the calling thread from the default policy to SCHED_BATCH; threads and processes
    it starts afterwards inherit it. A policy somebody chose on purpose (``chrt``, systemd's
    ``CPUSchedulingPolicy=``) is left as it is. Returns whether the thread now runs as batch."""
    batch, default = getattr(os, "SCHED_BATCH", None), getattr(os, "SCHED_OTHER", None)
    if batch is None or default is None:  # not Linux
        return False
    try:
        policy = os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
        if policy == batch:
            return True
        if policy != default:
            return False
        os.sched_setscheduler(0, batch, os.sched_param(0))
    except OSError:  # a sandbox that forbids it: the default policy is still correct
        return False
    return True
