"""Slurm on the head node, against a REAL Slurm: job events, job counts, job report.

One module-scoped stack: a single-node Slurm (tests/support/slurm.py), a real
carbon-cache and graphite-web (with its events database), lmaster with a
``[slurm]`` section polling squeue every 0.5 s and posting events, and lagent
running the SlurmJobs sensor every 0.5 s. Real ``sbatch --wrap`` jobs — a CPU
burner and a memory allocator — then must show up as per-job series, master
counts going up and back to 0, graphite-web events, and a job report whose
efficiency flags tell them from an idle ``sleep`` job.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fructosa.config import ConfigError, SlurmConfig, effective_master_ini, load_master_config
from fructosa.dashboards.jobs import job_dashboard
from fructosa.graphite_paths import short_hostname
from fructosa.jobs.events import JobEventsPoller, job_event, running_counts
from fructosa.jobs.report import ReportError, job_profile, summarize
from fructosa.jobs.slurm import Job, expand_hostlist, parse_sacct, parse_squeue
from tests.dashboards.helpers import model_targets
from tests.support.carbon import CarbonCache, GraphiteWeb, free_ports
from tests.support.configs import agent_ini, master_ini
from tests.support.daemons import Daemon
from tests.support.slurm import SlurmCluster, burner_job, cpu_share, unavailable_reason
from tests.support.waiting import wait_for

HOST = short_hostname(__import__("socket").gethostname())
BURN_SECONDS = 8
SHARE_TOLERANCE = 20
"""Percentage points between the mean of a job's samples and the share of a CPU its busy loop measured itself:
the samples miss the last fraction of a second and weigh the first (a short window) as much as the others."""
ALLOCATOR = "python3 -c 'import time; block = b\"x\" * (200 << 20); time.sleep(4)'"
ALLOCATOR_MEMORY_MIB = 300
SLEEPER = "sleep 3"


@dataclass
class Stack:
    slurm: SlurmCluster
    carbon: CarbonCache
    web: GraphiteWeb
    workdir: Path


def _configs(workdir: Path, slurm: SlurmCluster, carbon: CarbonCache, web: GraphiteWeb) -> tuple[Path, Path, int]:
    (port,) = free_ports(1)
    log = workdir / "limon.log"
    master = workdir / "lmaster.conf"
    slurm_options = {"poll interval": 0.5, "slurm conf": slurm.conf_path, "events url": f"{web.url}/events/"}
    master.write_text(
        master_ini(
            workdir,
            port,
            carbon.pickle_port,
            log=log,
            lmaster={"self metrics": "no"},
            graphite={"carbon receiver plaintext port": carbon.line_port},
            sections={"slurm": slurm_options},
        )
    )
    agent = workdir / "lagent.conf"
    agent.write_text(
        agent_ini(workdir, port, log=log, lagent={"self metrics": "no"}, sensors={"SlurmJobs": {"time_interval": 0.5}})
    )
    return master, agent, port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    if not GraphiteWeb.is_available():
        pytest.skip("graphite-web is not installed in this environment")
    workdir = tmp_path_factory.mktemp("slurm-master")
    with SlurmCluster(workdir / "slurm") as slurm, CarbonCache(workdir / "carbon") as carbon:
        with GraphiteWeb(carbon, events=True) as web:
            master_conf, agent_conf, port = _configs(workdir, slurm, carbon, web)
            with Daemon("lmaster", master_conf, workdir).start(listen_port=port):
                with Daemon("lagent", agent_conf, workdir).start():
                    yield Stack(slurm, carbon, web, workdir)


def _report(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fructosa.jobs.report", *args, "--graphite", stack.web.url],
        env={**os.environ, **stack.slurm.env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_real_jobs_give_series_counts_events_and_a_profile(stack: Stack) -> None:
    carbon, slurm = stack.carbon, stack.slurm
    share_file = stack.workdir / "burner-share"
    submitted = time.time()
    burner = slurm.sbatch(burner_job(BURN_SECONDS, share_file), "-J", "burner")
    allocator = slurm.sbatch(ALLOCATOR, "-J", "allocator", f"--mem={ALLOCATOR_MEMORY_MIB}M")

    # The node's view (lagent's SlurmJobs sensor): per-job series with plausible values. How much of its CPU
    # the busy loop gets is the machine's business (all of it on an idle node, what is left on a shared 2-core
    # CI box): the job measures that share itself, and the series is checked against it once the job is over.
    # Slurm may start a job seconds late on a loaded machine: long deadlines, no bound on how soon.
    carbon.wait_for(f"{HOST}.SlurmJobs.job_{burner}.cpu_percent", lambda s: len(s) >= 2, timeout=60)
    rss = carbon.wait_for(
        f"{HOST}.SlurmJobs.job_{allocator}.rss", lambda s: any(v > 150 << 20 for _, v in s), timeout=60
    )
    assert max(v for _, v in rss) < 400 << 20
    carbon.wait_for(f"{HOST}.SlurmJobs.count", lambda s: any(v == 2 for _, v in s), timeout=60)

    # The head node's view (lmaster's poller): counts up, then back to 0 after both end.
    carbon.wait_for("fructosa.slurm.jobs.running.total", lambda s: any(v == 2 for _, v in s), timeout=60)
    carbon.wait_for("fructosa.slurm.jobs.running.by_user.root", lambda s: any(v == 2 for _, v in s), timeout=60)
    carbon.wait_for("fructosa.slurm.jobs.running.by_partition.debug", lambda s: any(v >= 1 for _, v in s), timeout=60)
    for job in (burner, allocator):
        slurm.wait_state(job, ("GONE",), timeout=60)
        slurm.wait_accounted(job)
    ended_at = int(time.time())
    share = cpu_share(share_file)
    cpu = carbon.series(f"{HOST}.SlurmJobs.job_{burner}.cpu_percent")
    assert all(0 <= v <= 105 for _, v in cpu), cpu  # never more than the one CPU a single process can use
    carbon.wait_for("fructosa.slurm.jobs.running.total", lambda s: s[-1][1] == 0 and s[-1][0] >= ended_at, timeout=30)
    carbon.wait_for("fructosa.slurm.jobs.running.by_user.root", lambda s: s[-1][1] == 0, timeout=30)
    carbon.wait_for(f"{HOST}.SlurmJobs.count", lambda s: s[-1][1] == 0 and s[-1][0] >= ended_at, timeout=30)
    assert carbon.series("fructosa.slurm.jobs.started")[-1][1] == 2  # counters since lmaster started
    carbon.wait_for("fructosa.slurm.jobs.ended", lambda s: s[-1][1] == 2, timeout=30)

    # graphite-web events, as Grafana annotations read them (by tag).
    wait_for(lambda: len(stack.web.events_of("slurm job_end")) >= 2, 30, "graphite-web's two job_end events")
    (start,) = stack.web.events_of(f"slurm job_start job_{burner}")
    assert "user_root" in start["tags"] and "partition_debug" in start["tags"]
    assert "'burner'" in start["data"] and HOST in start["data"]
    (end,) = stack.web.events_of(f"job_end job_{burner}")
    assert end["what"] == f"Slurm job {burner} ended (COMPLETED)"
    assert end["when"] >= start["when"] + BURN_SECONDS - 1
    sleeper = slurm.sbatch(SLEEPER, "-J", "sleeper")  # after the counts above: it would change them

    # The job report: Slurm accounting (jobcomp) + graphite-web's render API.
    charts = stack.workdir / "charts"
    result = _report(stack, burner, "--format", "json", "--png", str(charts))
    assert result.returncode == 0, result.stderr
    profile = json.loads(result.stdout)
    assert profile["state"] == "COMPLETED" and profile["allocated_cpus"] == 1
    assert BURN_SECONDS - 1 <= profile["duration_seconds"] <= ended_at - submitted + 1  # Slurm's whole seconds
    assert list(profile["nodes"]) == [HOST]
    # A busy loop on 1 allocated CPU: the mean of its samples is the share of that CPU it measured itself.
    efficiency = profile["cpu_efficiency_percent"]
    assert abs(efficiency - share) <= SHARE_TOLERANCE, (profile, share)
    assert efficiency == round(profile["nodes"][HOST]["cpu_percent_mean"], 1)
    assert share - SHARE_TOLERANCE <= profile["nodes"][HOST]["cpu_percent_peak"] <= 105, (profile, share)
    for path in profile["charts"]:
        assert Path(path).read_bytes().startswith(b"\x89PNG")
    # Flags: idle_cpus only below the [jobs] threshold (a busy loop a loaded machine starved is idle for Slurm's
    # accounting too); 8 s is a short job; without --mem Slurm gives the whole node's memory (in the jobcomp
    # log's TRES), of which a busy loop uses a sliver.
    flags = {flag["name"]: flag for flag in profile["flags"]}
    assert set(flags) - {"idle_cpus"} == {"low_memory_use", "short_job"}, profile["flags"]
    assert ("idle_cpus" in flags) == (profile["used_cpus_mean"] < 0.25 * profile["allocated_cpus"]), profile
    assert flags["short_job"]["threshold"] == 60 and flags["short_job"]["value"] == profile["duration_seconds"]
    assert profile["allocated_memory_bytes"] > 2 * ALLOCATOR_MEMORY_MIB << 20  # the node's RealMemory
    text = _report(stack, allocator)
    assert text.returncode == 0, text.stderr
    assert f"Job {allocator} (allocator) of root in debug: COMPLETED" in text.stdout
    peak_mib = float(text.stdout.split("memory peak ")[1].split(" MiB")[0])
    assert 150 < peak_mib < 400, text.stdout
    assert f" MiB of {ALLOCATOR_MEMORY_MIB}.0 MiB allocated;" in text.stdout  # --mem, from the jobcomp log
    assert "flag low_memory_use" not in text.stdout and "flag memory_near_limit" not in text.stdout
    assert "  flag short_job: ran " in text.stdout
    # ~210 of 300 MiB: near the limit once the threshold is lowered below that share.
    near = json.loads(_report(stack, allocator, "--format", "json", "--memory-near-limit", "0.5").stdout)
    (flag,) = [flag for flag in near["flags"] if flag["name"] == "memory_near_limit"]
    assert flag["threshold"] == 0.5 and 0.5 < flag["value"] < 1.3
    assert flag["value"] == pytest.approx(near["rss_peak"] / (ALLOCATOR_MEMORY_MIB << 20), rel=1e-3)

    # A sleeping job holds its CPU idle: idle_cpus with the measured share, and short.
    slurm.wait_state(sleeper, ("GONE",), timeout=60)
    slurm.wait_accounted(sleeper)
    idle = _report(stack, sleeper, "--format", "json")
    assert idle.returncode == 0, idle.stderr
    flags = {flag["name"]: flag for flag in json.loads(idle.stdout)["flags"]}
    assert {"idle_cpus", "short_job"} <= set(flags), flags
    assert flags["idle_cpus"]["threshold"] == 0.25 and 0 <= flags["idle_cpus"]["value"] < 0.05
    assert _report(stack, sleeper, "--short-job", "1").stdout.count("flag short_job") == 0

    # The job dashboard's targets, with $job chosen, give this job's data from the real graphite-web.
    for _, target in model_targets(job_dashboard()):
        rendered = stack.web.render(target.target.replace("$job", f"job_{burner}"), from_="-5min")
        assert [series["target"] for series in rendered] == [HOST], target.target
        assert any(value is not None for value, _ in rendered[0]["datapoints"]), target.target

    # A job on a node Graphite never heard of, or on this node before its data: one clear line each.
    ghost = Job("77", "root", "debug", "ghost[1-2]", "COMPLETED", time.time() - 60, time.time() - 30, 1, "x")
    with pytest.raises(ReportError, match=r"^job 77 ran on ghost1, ghost2, unknown to Graphite$") as unknown_nodes:
        job_profile(ghost, stack.web.url)
    assert unknown_nodes.value.status == 3
    old = Job("78", "root", "debug", HOST, "COMPLETED", 1_000_000_000, 1_000_000_100, 1, "x")
    no_data = r"^no data for job 78 in Graphite between .* \(outside retention, or no SlurmJobs sensor on "
    with pytest.raises(ReportError, match=no_data + HOST + r"\)$"):
        job_profile(old, stack.web.url)

    unknown = _report(stack, "987654")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "fructosa-job-report: job 987654: not in Slurm accounting (unknown job, or not finished yet)"
    )


# -- pure parts, on recorded Slurm output --------------------------------------

SQUEUE = "7|alice|gpu|node[01-02]|2026-11-24T23:46:44|RUNNING|8|sim|v2\n8|bob|debug|node03|N/A|RUNNING|1|x\n"
SACCT_C = "7|alice(1001)|gpu|node[01-02]|2026-11-24T23:46:44|2026-11-24T23:50:00|CANCELLED by 0|8|sim\n"


def test_parsers_and_host_lists() -> None:
    running = parse_squeue(SQUEUE)
    assert [(job.job_id, job.user, job.cpus, job.name) for job in running] == [
        ("7", "alice", 8, "sim|v2"),
        ("8", "bob", 1, "x"),
    ]
    assert running[0].nodes == ["node01", "node02"] and running[1].start is None
    (ended,) = parse_sacct(SACCT_C)
    assert (ended.user, ended.state, ended.end - ended.start) == ("alice", "CANCELLED", 196)
    assert expand_hostlist("r[1-2]n[08-09],gpu5") == ["r1n08", "r1n09", "r2n08", "r2n09", "gpu5"]
    assert expand_hostlist("(null)") == []
    with pytest.raises(ValueError, match="unbalanced"):
        expand_hostlist("node[1-2")


def test_profile_integrates_rates_and_averages_samples() -> None:
    points = {
        "cpu_percent": [(10, 100.0), (20, 50.0)],
        "rss": [(10, 100.0), (20, 300.0)],
        "read_bytes_per_second": [(10, 1000.0), (20, 1000.0), (30, 0.0)],
        "write_bytes_per_second": [(10, 5.0), (1000, 5.0)],  # a gap (agent down) counts one typical step
    }
    profile = summarize(points)
    assert (profile["cpu_percent_mean"], profile["cpu_percent_peak"]) == (75.0, 100.0)
    assert (profile["rss_mean"], profile["rss_peak"], profile["samples"]) == (200, 300, 3)
    assert profile["read_bytes"] == 20_000 and profile["processes_peak"] is None


def test_counts_end_at_zero_and_events_carry_the_job() -> None:
    emitted: list = []
    poller = JobEventsPoller(SlurmConfig(), emitted.extend)  # observe() runs no Slurm command
    jobs = parse_squeue(SQUEUE)
    assert poller.changes(jobs) == ([], [])  # first poll: already running, no events
    poller.observe(jobs, [], [], 100.0)
    started, ended = poller.changes(jobs[1:])
    assert (started, [job.job_id for job in ended]) == ([], ["7"])
    points, events = poller.observe(jobs[1:], started, ended, 200.0)
    values = dict((path, value) for path, (_, value) in points)
    assert values["fructosa.slurm.jobs.running.by_user.alice"] == 0  # one final 0 …
    assert values["fructosa.slurm.jobs.running.by_user.bob"] == 1
    assert values["fructosa.slurm.jobs.ended"] == 1 and values["fructosa.slurm.jobs.running.cpus"] == 1
    assert values["fructosa.slurm.jobs.started"] == 0
    points, _ = poller.observe(jobs[1:], [], [], 300.0)
    assert "fructosa.slurm.jobs.running.by_user.alice" not in dict(points)  # … then the series stops
    (event,) = events
    assert event["tags"] == ["slurm", "job_end", "job_7", "user_alice", "partition_gpu"]
    assert running_counts([Job("1", "a b", "p", "", "RUNNING", None, None, None, "n")])["by_user"] == {"a b": 1}
    assert job_event(jobs[0], "start", 5.0)["when"] == 5


def test_slurm_section_of_lmaster_conf(tmp_path: Path) -> None:
    conf = tmp_path / "lmaster.conf"
    conf.write_text("[slurm]\npoll interval = 5\nsqueue = /opt/slurm/bin/squeue\nevents url = http://g/events/\n"
                    "poll intervall = 1\n")  # fmt: skip
    config = load_master_config(str(conf))
    assert config.slurm == SlurmConfig(
        enabled=True, poll_interval=5.0, squeue="/opt/slurm/bin/squeue", events_url="http://g/events/"
    )
    assert config.warnings == (f"{conf}: [slurm] unknown key 'poll intervall' ignored (did you mean 'poll interval'?)",)
    conf.write_text(effective_master_ini(config))
    assert load_master_config(str(conf)).slurm == config.slurm
    conf.write_text("[slurm]\nenabled = no\n")
    assert not load_master_config(str(conf)).slurm.enabled
    conf.write_text("[slurm]\nevents url = graphite/events\n")
    with pytest.raises(ConfigError, match=r"\[slurm\] events url = 'graphite/events': not an http:// or https:// URL$"):
        load_master_config(str(conf))


def test_poller_survives_a_missing_squeue_and_an_unreachable_graphite(tmp_path: Path) -> None:
    (closed_port,) = free_ports(1)
    emitted: list = []
    config = SlurmConfig(squeue=str(tmp_path / "no-squeue"), events_url=f"http://127.0.0.1:{closed_port}/events/")
    poller = JobEventsPoller(config, emitted.extend)
    asyncio.run(poller.poll())
    assert [(path, value) for path, (_, value) in emitted] == [("fructosa.slurm.up", 0.0)]
    poller.known = {}  # as after a first poll; then a job appears, and graphite-web is down
    poller.pending_events.append(job_event(parse_squeue(SQUEUE)[0], "start", 1.0))
    poller._post_pending()
    assert len(poller.pending_events) == 1 and poller.events_posted == 0  # kept for the next poll
