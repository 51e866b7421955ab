"""A Slurm test job: a busy loop for SECONDS of wall time that keeps SHARE_FILE holding the share of one CPU
it has had so far, in % (its own CPU time over its wall time).

On an idle node that share is near 100 %; on a loaded machine a busy loop gets what the scheduler gives it,
and a sensor measuring the job must find that figure, not 100 %. The tests compare the product's figures
with it. It is written every 0.2 s (a test may cancel the job at any moment) through a rename, so a reader
never sees half a number.

Usage: python3 burner.py SECONDS SHARE_FILE
"""

from __future__ import annotations

import os
import sys
import time

REPORT_EVERY = 0.2


def main(seconds: float, share_file: str) -> None:
    start = time.time()
    end, next_report = start + seconds, start
    while True:
        now = time.time()
        if now >= next_report or now >= end:
            used = os.times()
            with open(share_file + ".tmp", "w") as out:
                out.write(f"{100 * (used.user + used.system) / max(now - start, 1e-3):.1f}\n")
            os.replace(share_file + ".tmp", share_file)
            next_report = now + REPORT_EVERY
            if now >= end:
                return


if __name__ == "__main__":
    main(float(sys.argv[1]), sys.argv[2])
