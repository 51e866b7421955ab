"""lmaster's job memory and job API: the tracker fed real Blocks, the routes through aiohttp's test client,
and one run against a REAL single-node Slurm with real lmaster, lagent and carbon-cache.

Every API answer is checked against the OpenAPI document the server itself serves.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fructosa.config import ConfigError, effective_master_ini, load_master_config
from fructosa.graphite_paths import short_hostname
from fructosa.http.app import make_app
from fructosa.http.jobs import JobService, add_job_routes
from fructosa.http.settings import HttpSettings
from fructosa.http.state import HttpState, StaticNodes
from fructosa.jobs.flags import FlagThresholds
from fructosa.jobs.report import profile_of, summarize
from fructosa.jobs.slurm import Job
from fructosa.jobs.tracker import METRICS, JobLimits, JobTracker, Series
from fructosa.taps.latest import LatestValues
from fructosa.wire.blocks import Block
from tests.support.carbon import CarbonCache, GraphiteWeb, free_ports
from tests.support.configs import agent_ini, master_ini
from tests.support.daemons import Daemon
from tests.support.slurm import SlurmCluster, burner_job, cpu_share, unavailable_reason
from tests.support.waiting import wait_for

NOW = 1_800_000_000.0
TOKEN = "jobs-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GIB = 1 << 30


def job_block(job: str, host: str, when: float, cpu: float, rss: float, read: float = 0.0, write: float = 0.0) -> Block:
    """One SlurmJobs sample of one job on one host, as lagent sends it (with the node's other series)."""
    base = f"{host}.SlurmJobs.job_{job}"
    return Block.of([
        (f"{host}.CPUPercent.total", (when, 50.0)), (f"{host}.SlurmJobs.count", (when, 1.0)),
        (f"{base}.processes", (when, 2.0)), (f"{base}.cpu_percent", (when, cpu)), (f"{base}.rss", (when, rss)),
        (f"{base}.read_bytes_per_second", (when, read)), (f"{base}.write_bytes_per_second", (when, write)),
    ])  # fmt: skip


def slurm_job(job: str, nodes: str, cpus: int = 4, start: float = NOW - 600, end: float | None = None,
              state: str = "RUNNING", user: str = "alice") -> Job:  # fmt: skip
    return Job(job, user, "batch", nodes, state, start, end, cpus, f"sim-{job}")


# -- the tracker, fed blocks -------------------------------------------------------------------------


def test_tracker_keeps_running_jobs_then_profiles_an_ended_one_like_the_job_report() -> None:
    clock = [NOW]
    tracker = JobTracker(clock=lambda: clock[0])
    running = [slurm_job("41", "n[01-02]")]
    tracker.polled(running, [], [], NOW - 500)  # the poller's first poll: already running, no start event
    for step in range(30):
        when = NOW - 300 + 10 * step
        for host, cpu in (("n01", 380.0), ("n02", 20.0)):
            tracker.observe(job_block("41", host, when, cpu, 2 * GIB, read=1e6), host)
    tracker.observe(Block.of([("n01.CPUPercent.total", (NOW, 1.0))]), "n01")  # no job data: ignored
    record = tracker.get("41")
    assert record is not None and record.running and record.user == "alice" and record.nodes == ["n01", "n02"]
    assert record.samples["n01"].latest == {"processes": 2.0, "cpu_percent": 380.0, "rss": 2 * GIB,
                                            "read_bytes_per_second": 1e6, "write_bytes_per_second": 0.0}  # fmt: skip
    assert tracker.points == 2 * len(METRICS) * 30

    ended = slurm_job("41", "n[01-02]", end=NOW + 5, state="COMPLETED")
    ends: list[str] = []
    tracker.on_ended = lambda record: ends.append(record.job_id)
    tracker.polled([], [], [ended], NOW + 10)
    assert ends == ["41"] and not record.running and record.state == "COMPLETED" and record.end == NOW + 5
    profile = tracker.profile(record)
    # The same computation fructosa-job-report makes from graphite-web's series.
    series = {host: {metric: [(NOW - 300 + 10 * s, v) for s in range(30)] for metric, v in
                     (("cpu_percent", cpu), ("rss", 2 * GIB), ("read_bytes_per_second", 1e6),
                      ("write_bytes_per_second", 0.0), ("processes", 2.0))}
              for host, cpu in (("n01", 380.0), ("n02", 20.0))}  # fmt: skip
    expected = profile_of(ended, {host: summarize(points) for host, points in series.items()})
    assert profile == expected
    assert profile["cpu_efficiency_percent"] == 100.0 and profile["duration_seconds"] == 605.0
    assert profile["read_bytes"] == 2 * 30 * 10 * 1_000_000
    assert [flag["name"] for flag in profile["flags"]] == []
    # Slurm's allocated memory turns on the memory flags: 2 GiB of 64 GiB per node is low.
    record.allocated_memory, record.profile = 128 * GIB, None
    assert [flag["name"] for flag in tracker.profile(record)["flags"]] == ["low_memory_use"]
    tracker.reconfigure(JobLimits(), FlagThresholds(low_memory_use=0.01))
    assert tracker.profile(record)["flags"] == []


def test_series_downsample_to_the_cap_keeping_span_means_and_exact_peaks() -> None:
    series, points = Series(), 0
    for second in range(1000):
        points += series.add(float(second), 100.0 if second == 777 else float(second % 2), cap=8)
    assert points == len(series.times) <= 8
    assert series.times[0] == 0.0 and series.per_bucket == 128
    assert series.peak() == 100.0
    assert max(series.means) < 2.0  # the spike is averaged in the means …
    assert summarize({"cpu_percent": series.points()}, peaks={"cpu_percent": series.peak()})["cpu_percent_peak"] == 100
    assert series.add(5.0, 1.0, cap=8) == 0 and series.last_time == 999.0  # a resent old sample is ignored
    with pytest.raises(ValueError, match="even number"):
        JobLimits(series_points=7)


def test_without_slurm_jobs_come_from_samples_and_end_when_silent() -> None:
    clock = [NOW]
    tracker = JobTracker(JobLimits(silence=60), clock=lambda: clock[0])
    for step in range(3):
        tracker.observe(job_block("7", "n01", NOW + 10 * step, 100.0, 1e6), "relay")
    record = tracker.get("7")
    assert record is not None and record.running and not record.from_slurm and record.start == NOW
    tracker.expire(NOW + 80)
    assert record.running  # 60 s after its last sample (NOW + 20) is NOW + 80: not yet
    tracker.expire(NOW + 81)
    assert not record.running and record.state == "ENDED" and record.end == NOW + 20
    profile = tracker.profile(record)
    assert profile["allocated_cpus"] is None and profile["cpu_efficiency_percent"] is None
    assert profile["nodes"]["n01"]["cpu_percent_mean"] == 100.0 and profile["duration_seconds"] == 20.0


def test_memory_bounds_ended_jobs_and_points() -> None:
    limits = JobLimits(series_points=4, max_points=3 * len(METRICS) * 2, max_ended=2, keep_ended=1000)
    tracker = JobTracker(limits, clock=lambda: NOW)
    for job in range(1, 5):
        tracker.polled([slurm_job(str(job), "n01")], [], [], NOW)
        for step in range(20):
            tracker.observe(job_block(str(job), "n01", NOW + step, 10.0 * job, 1e6), "n01")
        assert tracker.points <= limits.max_points
        tracker.polled([], [], [slurm_job(str(job), "n01", end=NOW + job, state="COMPLETED")], NOW)
    # 20 samples in at most 4 points: 3 points (buckets of 8, 8, 4) × 5 metrics a job, room for two jobs:
    # the oldest ended jobs' series went, their profiles stayed.
    assert not tracker.get("2").has_series() and tracker.get("3").has_series()
    assert not tracker.get("1").has_series() and tracker.get("1").profile["nodes"]["n01"]["cpu_percent_mean"] == 10
    tracker.expire(NOW + 10)
    assert sorted(tracker.records) == ["3", "4"]  # at most two ended jobs
    tracker.expire(NOW + 1003.5)
    assert sorted(tracker.records) == ["4"]  # job 3 ended at NOW + 3, more than keep_ended ago
    assert tracker.points == 3 * len(METRICS)


def test_memory_per_job_and_node_stays_within_the_documented_bound() -> None:
    import tracemalloc

    limits = JobLimits(series_points=120)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracker = JobTracker(limits, clock=lambda: NOW)
        for job in range(40):
            tracker.polled([slurm_job(str(job), "n[01-02]")], [], [], NOW)
            for step in range(200):  # more samples than points: merged pairwise
                for host in ("n01", "n02"):
                    tracker.observe(job_block(str(job), host, NOW + step, 1.0 * step, 1e9), host)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    pairs = 80
    assert tracker.points <= pairs * len(METRICS) * limits.series_points
    # The module docstring: 24 bytes a point, and about 4 KB per job and node besides.
    assert used < tracker.points * 24 + pairs * 4096, (used, tracker.points)
    print(f"job memory: {used / pairs:.0f} bytes per job and node with {tracker.points / pairs:.0f} points")


def test_jobs_section_of_lmaster_conf(tmp_path: Path) -> None:
    conf = tmp_path / "lmaster.conf"
    conf.write_text("[jobs]\nidle cpus = 0.5\nio heavy = 10M\nmax ended jobs = 50\nseries points = 60\n"
                    "[http]\ngraphite url = http://graphite.example\n")  # fmt: skip
    config = load_master_config(str(conf))
    assert config.jobs.thresholds == FlagThresholds(idle_cpus=0.5, io_heavy=10 << 20)
    assert (config.jobs.max_ended, config.jobs.limits().series_points) == (50, 60)
    assert config.http.graphite_url == "http://graphite.example"
    conf.write_text(effective_master_ini(config))
    assert load_master_config(str(conf)).jobs == config.jobs
    conf.write_text("[jobs]\nmemory near limit = 1.5\n")
    with pytest.raises(ConfigError, match=r"\[jobs\] memory near limit = '1.5': a fraction above 0 and at most 1$"):
        load_master_config(str(conf))


# -- the API, through aiohttp's test client ----------------------------------------------------------


class Api:
    """A test client and the OpenAPI document it serves; :meth:`get` checks every answer against it."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.document: dict[str, Any] = {}

    async def get(self, path: str, status: int = 200, template: str | None = None, **options: Any) -> Any:
        if not self.document:
            response = await self.client.get("/api/openapi.json", headers=AUTH)
            self.document = await response.json()
        response = await self.client.get(path, headers=options.get("headers", AUTH))
        body = await response.json(content_type=None)
        assert response.status == status, body
        operation = self.document["paths"][template or path.split("?")[0]]["get"]
        schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator({"components": self.document["components"], "allOf": [schema]}).validate(body)
        return body


def fed_tracker() -> JobTracker:
    """Job 41 ran on n01 and ended; job 42 runs on n02; job 43 ended, lmaster never had its samples."""
    tracker = JobTracker(clock=lambda: NOW)
    tracker.polled([slurm_job("41", "n01"), slurm_job("42", "n02", cpus=2, user="bob")], [], [], NOW - 300)
    for step in range(10):
        tracker.observe(job_block("41", "n01", NOW - 200 + 10 * step, 20.0, 1e9), "n01")
        tracker.observe(job_block("42", "n02", NOW - 200 + 10 * step, 150.0, 2e9), "n02")
    tracker.polled([slurm_job("42", "n02", cpus=2, user="bob"), slurm_job("43", "n03", start=NOW - 50)], [], [],
                   NOW - 60)  # fmt: skip
    ended = [slurm_job("41", "n01", end=NOW - 100, state="COMPLETED"),
             slurm_job("43", "n03", start=NOW - 50, end=NOW - 40, state="FAILED")]  # fmt: skip
    tracker.polled([slurm_job("42", "n02", cpus=2, user="bob")], [], ended, NOW - 30)
    return tracker


def with_api(test: Callable[[Api], Awaitable[None]], graphite_url: str | None = None) -> None:
    app = make_app(HttpSettings(token=TOKEN.encode()), HttpState(StaticNodes(), LatestValues(), clock=lambda: NOW))
    add_job_routes(app, JobService(fed_tracker(), graphite_url=graphite_url))

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            await test(Api(client))

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_api_lists_running_and_ended_jobs_with_filters() -> None:
    async def test(api: Api) -> None:
        listing = await api.get("/api/jobs")
        served = {resource.canonical for resource in api.client.app.router.resources()}
        assert (
            {path for path in api.document["paths"] if path.startswith("/api/jobs")}
            == {path for path in served if path.startswith("/api/jobs")}
            == {"/api/jobs", "/api/jobs/{job}", "/api/jobs/{job}/history"}
        )
        for operation in (api.document["paths"][path]["get"] for path in served if path.startswith("/api/jobs")):
            assert {"400", "401"} <= set(operation["responses"])
        assert [row["job_id"] for row in listing["jobs"]] == ["42", "43", "41"]  # running first, then newest end
        assert (listing["running"], listing["ended"], listing["slurm"]) == (1, 2, True)
        running, failed, ended = listing["jobs"]
        assert running["status"] == "running" and running["cpu_efficiency_percent"] == 75.0  # 150 % of 2 CPUs
        assert running["cpu_percent"] == 150.0 and running["rss"] == 2e9 and running["flags"] is None
        assert ended["state"] == "COMPLETED" and ended["cpu_efficiency_percent"] == 5.0  # 20 % of 4 CPUs
        assert ended["flags"] == ["idle_cpus"] and ended["duration_seconds"] == 500.0
        assert failed["flags"] is None and failed["cpu_efficiency_percent"] is None  # no samples of it here
        assert [row["job_id"] for row in (await api.get("/api/jobs?state=ended"))["jobs"]] == ["43", "41"]
        assert [row["job_id"] for row in (await api.get("/api/jobs?user=bob"))["jobs"]] == ["42"]
        assert (await api.get("/api/jobs?user=nobody"))["jobs"] == []
        bad = await api.get("/api/jobs?state=done", 400, template="/api/jobs")
        assert bad == {"error": "unknown state 'done'; valid: running, ended"}
        assert (await api.get("/api/jobs?sort=user", 400, "/api/jobs"))["error"].startswith("unknown parameter 'sort'")
        assert (await api.get("/api/jobs", 401, headers={}))["error"]

    with_api(test)


def test_api_one_job_its_profile_and_history() -> None:
    async def test(api: Api) -> None:
        running = await api.get("/api/jobs/42", template="/api/jobs/{job}")
        assert running["profile"] is None and running["profile_source"] is None
        assert running["nodes"]["n02"]["cpu_percent"] == 150.0 and running["nodes"]["n02"]["time"] == NOW - 110
        ended = await api.get("/api/jobs/41", template="/api/jobs/{job}")
        profile = ended["profile"]
        assert ended["profile_source"] == "lmaster" and profile["state"] == "COMPLETED"
        assert profile["nodes"]["n01"]["cpu_percent_mean"] == 20.0 and profile["nodes"]["n01"]["samples"] == 10
        (flag,) = profile["flags"]
        assert flag["name"] == "idle_cpus" and flag["value"] == 0.05 and flag["threshold"] == 0.25
        history = await api.get("/api/jobs/41/history", template="/api/jobs/{job}/history")
        assert history["n01"]["cpu_percent"]["values"] == [20.0] * 10
        assert history["n01"]["rss"]["times"][0] == NOW - 200
        no_samples = await api.get("/api/jobs/43", 409, template="/api/jobs/{job}")
        assert no_samples == {"error": "job 43: lmaster kept none of its samples and [http] graphite url is not set"}
        assert (await api.get("/api/jobs/999", 404, "/api/jobs/{job}"))["error"] == "unknown job '999'"
        assert (await api.get("/api/jobs/999/history", 404, "/api/jobs/{job}/history"))["error"]
        assert (await api.get("/api/jobs/x1", 400, "/api/jobs/{job}"))["error"] == "'x1' is not a Slurm job id"

    with_api(test)


def test_api_says_when_graphite_web_cannot_be_reached() -> None:
    (closed,) = free_ports(1)

    async def test(api: Api) -> None:
        answer = await api.get("/api/jobs/43", 502, template="/api/jobs/{job}")
        assert answer["error"].startswith(f"cannot reach graphite-web at http://127.0.0.1:{closed}: ")
        # A job lmaster never saw, without [slurm] to ask accounting: unknown.
        assert (await api.get("/api/jobs/999", 404, "/api/jobs/{job}"))["error"].startswith("unknown job '999'")

    with_api(test, graphite_url=f"http://127.0.0.1:{closed}")


@pytest.mark.timeout(120)
def test_api_asks_graphite_web_for_a_job_whose_samples_lmaster_did_not_keep(tmp_path: Path) -> None:
    if not GraphiteWeb.is_available():
        pytest.skip("graphite-web is not installed in this environment")
    now = int(time.time())
    start, end = now - 120, now - 60
    tracker = JobTracker()  # the poller saw job 77 run and end; no agent sent its samples here
    tracker.polled([slurm_job("77", "gx01", cpus=2, start=start)], [], [], start)
    tracker.polled([], [], [slurm_job("77", "gx01", cpus=2, start=start, end=end, state="COMPLETED")], end + 1)
    base = "gx01.SlurmJobs.job_77"
    lines = [f"{base}.{metric} {value} {when}" for when in range(start, end, 10)
             for metric, value in (("cpu_percent", 100.0), ("rss", 5e8), ("processes", 1))]  # fmt: skip
    with CarbonCache(tmp_path / "carbon") as carbon, GraphiteWeb(carbon) as graphite:
        carbon.send_plaintext(lines)
        carbon.wait_for(f"{base}.rss", lambda series: len(series) == 6, timeout=20)
        app = make_app(HttpSettings(token=TOKEN.encode()), HttpState(StaticNodes(), LatestValues()))
        add_job_routes(app, JobService(tracker, graphite_url=graphite.url))

        async def scenario() -> None:
            async with TestClient(TestServer(app)) as client:
                api = Api(client)
                answer = await api.get("/api/jobs/77", template="/api/jobs/{job}")
                assert answer["profile_source"] == "graphite" and answer["job"]["status"] == "ended"
                profile = answer["profile"]
                assert profile["nodes"]["gx01"]["samples"] == 6 and profile["cpu_efficiency_percent"] == 50.0
                assert profile["duration_seconds"] == 60 and profile["nodes"]["gx01"]["rss_peak"] == 5e8
                assert [flag["name"] for flag in profile["flags"]] == []  # 50 % busy, 60 s: no flag

        asyncio.run(asyncio.wait_for(scenario(), 60))


# -- end to end, on a real Slurm ----------------------------------------------------------------------

HOST = short_hostname(__import__("socket").gethostname())
BURN_SECONDS = 30
"""Longer than the test lets it run: it is cancelled once lmaster holds enough samples of it."""
SHARE_TOLERANCE = 20
"""Percentage points between the mean of a job's samples and the share of a CPU its busy loop measured itself:
the samples miss the last fraction of a second and weigh the first (a short window) as much as the others."""


class Stack:
    """A real single-node Slurm, carbon-cache, lmaster with [slurm] and [http] (no graphite url), and lagent."""

    def __init__(self, workdir: Path, slurm: SlurmCluster, carbon: CarbonCache) -> None:
        self.workdir, self.slurm = workdir, slurm
        port, self.http_port = free_ports(2)
        token = workdir / "http-token"
        token.write_text(TOKEN)
        token.chmod(0o600)
        self.master_conf = workdir / "lmaster.conf"
        self.master_conf.write_text(master_ini(
            workdir, port, carbon.pickle_port, lmaster={"self metrics": "no"},
            graphite={"carbon receiver plaintext port": carbon.line_port},
            sections={"slurm": {"poll interval": 0.5, "slurm conf": slurm.conf_path},
                      "http": {"listen": f"127.0.0.1:{self.http_port}", "token file": token}},
        ))  # fmt: skip
        self.agent_conf = workdir / "lagent.conf"
        self.agent_conf.write_text(agent_ini(workdir, port, lagent={"self metrics": "no"},
                                             sensors={"SlurmJobs": {"time_interval": 0.5}}))  # fmt: skip
        self.port = port
        self.document: dict[str, Any] = {}

    def get(self, path: str, status: int = 200, template: str | None = None) -> Any:
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            connection.request("GET", path, headers=AUTH)
            response = connection.getresponse()
            body = json.loads(response.read())
        finally:
            connection.close()
        assert response.status == status, (path, body)
        if path == "/api/openapi.json":
            return body
        if not self.document:
            self.document = self.get("/api/openapi.json")
        operation = self.document["paths"][template or path.split("?")[0]]["get"]
        schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator({"components": self.document["components"], "allOf": [schema]}).validate(body)
        return body


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("jobs-api")
    with SlurmCluster(workdir / "slurm") as slurm, CarbonCache(workdir / "carbon") as carbon:
        stack = Stack(workdir, slurm, carbon)
        with Daemon("lmaster", stack.master_conf, workdir).start(listen_port=stack.port):
            with Daemon("lagent", stack.agent_conf, workdir).start():
                yield stack


@pytest.mark.timeout(180)
def test_a_real_job_is_listed_running_then_ended_with_a_profile_from_lmasters_memory(stack: Stack) -> None:
    """A busy loop on its one CPU, listed running and busy, cancelled, then ended with a profile.

    How busy is the machine's business: on an idle node the loop has its whole CPU, on a shared 2-core CI box
    what the scheduler leaves it. The job measures that share itself (tests/support/burner.py), and lmaster's
    figures are checked against it, not against 100 %; a job that Slurm starts late only starts later.
    """
    share_file = stack.workdir / "burner-share"
    submitted = time.time()
    burner = stack.slurm.sbatch(burner_job(BURN_SECONDS, share_file), "-J", "burner")

    def running_and_measured() -> dict[str, Any] | None:
        rows = [row for row in stack.get("/api/jobs?state=running")["jobs"] if row["job_id"] == burner]
        # lmaster's Slurm poller and the agent's samples both made the row: the job's facts and a CPU figure
        return rows[0] if rows and rows[0]["from_slurm"] and (rows[0]["cpu_percent"] or 0) > 0 else None

    row = wait_for(running_and_measured, 60, f"job {burner} running and measured in /api/jobs", interval=0.3)
    assert (row["user"], row["partition"], row["nodes"], row["cpus"]) == ("root", "debug", [HOST], 1)
    assert row["from_slurm"] and row["state"] == "RUNNING" and row["name"] == "burner"
    assert row["cpu_efficiency_percent"] == row["cpu_percent"] <= 105  # the newest CPU use over its 1 CPU
    detail = stack.get(f"/api/jobs/{burner}", template="/api/jobs/{job}")
    assert detail["profile"] is None and detail["nodes"][HOST]["cpu_percent"] > 0

    def samples() -> int:
        series = stack.get(f"/api/jobs/{burner}/history", template="/api/jobs/{job}/history")[HOST]["cpu_percent"]
        return len(series["values"])

    wait_for(lambda: samples() >= 12, 60, f"twelve samples of job {burner} in lmaster's memory", interval=0.3)
    stack.slurm.run("scancel", burner)
    share = cpu_share(share_file)  # up to the last 0.2 s before the cancel
    ended = wait_for(lambda: [r for r in stack.get("/api/jobs?state=ended")["jobs"] if r["job_id"] == burner],
                     60, f"job {burner} ended in /api/jobs", interval=0.3)[0]  # fmt: skip
    assert ended["state"] in ("CANCELLED", "ENDED") and submitted - 1 <= ended["start"] <= ended["end"] <= time.time()
    answer = stack.get(f"/api/jobs/{burner}", template="/api/jobs/{job}")
    profile = answer["profile"]
    assert answer["profile_source"] == "lmaster" and list(profile["nodes"]) == [HOST]
    # lmaster's mean of the agent's samples is the share of its CPU the loop had (the samples cover its life
    # but for the last fraction of a second), and no sample is above what one busy process can use.
    efficiency = profile["cpu_efficiency_percent"]
    assert profile["allocated_cpus"] == 1 and efficiency == round(profile["nodes"][HOST]["cpu_percent_mean"], 1)
    assert abs(efficiency - share) <= SHARE_TOLERANCE, (efficiency, share)
    assert share - SHARE_TOLERANCE <= profile["nodes"][HOST]["cpu_percent_peak"] <= 105, (profile, share)
    flags = {flag["name"]: flag for flag in profile["flags"]}
    # the [jobs] default threshold, on the figure the flag names (CPUs used on average, to 0.01)
    assert ("idle_cpus" in flags) == (profile["used_cpus_mean"] < 0.25 * profile["allocated_cpus"]), profile
    assert flags["short_job"]["value"] == profile["duration_seconds"] < 60
    assert flags["short_job"]["threshold"] == 60
    # Without --mem Slurm allocates the whole node's memory (the jobcomp log's TRES), of which a loop uses little.
    assert profile["allocated_memory_bytes"] > 100 << 20 and "low_memory_use" in flags
