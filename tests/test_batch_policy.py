"""lagent runs as a batch job (SCHED_BATCH): every thread of a real lagent, those started
later included; a policy somebody chose on purpose is kept."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.carbon import free_ports
from tests.support.daemons import Daemon

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")

REPORT_POLICIES = """
import os, threading
from fructosa.agent.batch_policy import schedule_as_batch
{before}
switched = schedule_as_batch()
seen = []
thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
thread.start()
thread.join()
print(switched, os.sched_getscheduler(0), seen[0])
"""


def policies_after(before: str = "") -> list[int]:
    code = REPORT_POLICIES.format(before=before)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    switched, main, thread = result.stdout.split()
    return [switched == "True", int(main), int(thread)]


def test_the_default_policy_becomes_batch_for_the_thread_and_those_it_starts() -> None:
    assert policies_after() == [True, os.SCHED_BATCH, os.SCHED_BATCH]


def test_a_policy_chosen_on_purpose_is_left_alone() -> None:
    before = "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))"
    assert policies_after(before) == [False, os.SCHED_IDLE, os.SCHED_IDLE]


def test_every_thread_of_a_running_lagent_is_batch(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nobody listens: the agent measures and keeps retrying
    conf = tmp_path / "lagent.conf"
    conf.write_text(
        f"[lmaster]\nhost = 127.0.0.1\nincoming data port = {port}\n\n"
        f"[lagent]\nhostname = batchpolicy\nspool dir = {tmp_path / 'spool'}\n\n"
        f"[logging]\nfilename = {tmp_path / 'lagent.log'}\nlevel = INFO\n\n"
        "[sensor:TopProcesses]\ntime_interval = 1\n\n[sensor:VirtualMemory]\ntime_interval = 1\n"
    )
    with Daemon("lagent", conf, tmp_path).start() as agent:
        deadline = time.monotonic() + 60
        while True:
            policies = {}
            for tid in os.listdir(f"/proc/{agent.pid}/task"):
                try:
                    policies[int(tid)] = os.sched_getscheduler(int(tid))
                except OSError:
                    pass  # a passing thread that ended
            # the event loop and the thread TopProcesses is measured on
            if len(policies) >= 2 and set(policies.values()) == {os.SCHED_BATCH}:
                break
            assert time.monotonic() < deadline, policies
            time.sleep(0.2)
