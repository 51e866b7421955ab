"""Alarms: the evaluator fed real blocks with a fake clock, the store under kill -9, the webhook,
the HTTP routes (Metric Proxy shapes and FrUCToSA's), hostile definitions, the configuration and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fructosa.alarms import cli
from fructosa.alarms.evaluator import AlarmEvaluator, EvaluatorSettings, Transition
from fructosa.alarms.notify import Notifier, NotifySettings
from fructosa.alarms.rules import RuleError, make_rule
from fructosa.alarms.service import AlarmService, LimitReached, usable_state_dir
from fructosa.alarms.store import AlarmStore, StoreError
from fructosa.config import ConfigError, load_master_config
from fructosa.http.actions import add_action_routes
from fructosa.http.alarms import add_alarm_routes
from fructosa.http.app import make_app
from fructosa.http.settings import HttpSettings
from fructosa.http.state import HttpState, StaticNodes
from fructosa.taps.latest import LatestValues
from fructosa.wire.blocks import Block

pytestmark = pytest.mark.timeout(60)

NOW = 1_800_000_000.0
TOKEN = b"alarm-token-0123456789"
AUTH = {"Authorization": "Bearer " + TOKEN.decode()}


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def block(*points: tuple[str, float], when: float = NOW) -> Block:
    return Block.of([(path, (when, value)) for path, value in points])


def evaluator(*rules: Any, clock: Clock | None = None, **settings: Any) -> tuple[AlarmEvaluator, list[Transition]]:
    settings.setdefault("node_silent", False)
    settings.setdefault("job_idle", False)
    engine = AlarmEvaluator(rules, EvaluatorSettings(**settings), clock or Clock())
    seen: list[Transition] = []
    engine.listeners.append(seen.append)
    return engine, seen


def moves(transitions: list[Transition]) -> list[tuple[str, str, str]]:
    return [(t.key, t.old, t.new) for t in transitions]


# -- evaluator ----------------------------------------------------------------------------------------


def test_node_alarm_fires_after_for_and_resolves():
    clock = Clock()
    rule = make_rule("hot", "*.CPUPercent.total", ">", 90, for_seconds=30)
    engine, seen = evaluator(rule, clock=clock)
    engine.observe(block(("n01.CPUPercent.total", 95.0), ("n02.CPUPercent.total", 10.0)), "relay")
    assert moves(seen) == [("n01", "ok", "pending")]
    clock.now += 29
    engine.tick()
    assert engine.states("hot")["n01"].status == "pending"
    clock.now += 2
    engine.tick()
    assert moves(seen)[-1] == ("n01", "pending", "firing")
    assert engine.states("hot")["n01"].since == clock.now
    assert engine.states("hot")["n02"].status == "ok"
    engine.observe(block(("n01.CPUPercent.total", 50.0), when=clock.now), "n01")
    assert moves(seen)[-1] == ("n01", "firing", "resolved")


def test_condition_that_stops_holding_before_for_never_fires():
    clock = Clock()
    engine, seen = evaluator(make_rule("hot", "*.CPUPercent.total", ">", 90, for_seconds=30), clock=clock)
    engine.observe(block(("n01.CPUPercent.total", 95.0)), "n01")
    clock.now += 10
    engine.observe(block(("n01.CPUPercent.total", 20.0), when=clock.now), "n01")
    clock.now += 60
    engine.tick()
    assert moves(seen) == [("n01", "ok", "pending"), ("n01", "pending", "ok")]


def test_node_state_holds_when_any_series_of_the_node_holds():
    engine, seen = evaluator(make_rule("hot-cpu", "*.CPUPercent.*", ">=", 99))
    engine.observe(block(("n01.CPUPercent.0", 10.0), ("n01.CPUPercent.1", 99.0), ("n01.Other.1", 100.0)), "n01")
    assert moves(seen) == [("n01", "ok", "firing")]
    assert engine.current("hot-cpu") == 99.0


@pytest.mark.parametrize(
    ("target", "expected", "fires"),
    [("cluster-mean", 40.0, False), ("cluster-max", 90.0, True), ("cluster-sum", 120.0, True)],
)
def test_cluster_aggregates(target, expected, fires):
    engine, seen = evaluator(make_rule("c", "*.VirtualMemory.percent", ">", 80, target=target))
    for node, value in (("n01", 10.0), ("n02", 20.0), ("n03", 90.0)):
        engine.observe(block((f"{node}.VirtualMemory.percent", value)), node)
    assert seen == []  # cluster rules are evaluated at the tick, not per datapoint
    engine.tick()
    assert engine.states("c")["cluster"].value == pytest.approx(expected)
    assert (engine.states("c")["cluster"].status == "firing") is fires


def test_job_target_sums_a_job_over_its_nodes():
    rule = make_rule("fat-job", "*.SlurmJobs.job_*.rss", ">", 1000, target="job")
    engine, seen = evaluator(rule)
    engine.observe(block(("n01.SlurmJobs.job_7.rss", 600.0), ("n01.SlurmJobs.job_8.rss", 10.0)), "n01")
    assert seen == []
    engine.observe(block(("n02.SlurmJobs.job_7.rss", 600.0)), "n02")
    assert moves(seen) == [("7", "ok", "firing")]
    assert engine.states("fat-job")["7"].value == 1200.0
    assert engine.states("fat-job")["8"].status == "ok"


def test_ended_job_is_resolved_when_its_series_go_stale():
    clock = Clock()
    engine, seen = evaluator(make_rule("j", "*.SlurmJobs.job_*.rss", ">", 1, target="job"), clock=clock)
    engine.observe(block(("n01.SlurmJobs.job_7.rss", 5.0)), "n01")
    clock.now += 400
    engine.tick()
    assert moves(seen) == [("7", "ok", "firing"), ("7", "firing", "resolved")]
    assert "7" not in engine.states("j")


def test_old_datapoints_do_not_raise_alarms():
    engine, seen = evaluator(make_rule("hot", "*.CPUPercent.total", ">", 90))
    engine.observe(block(("n01.CPUPercent.total", 99.0), when=NOW - 3600), "n01")  # a replayed spool
    assert seen == [] and engine.ignored_stale == 1


def test_node_silent_with_a_fake_clock():
    clock = Clock()
    engine, seen = evaluator(clock=clock, node_silent=True, silent_after=60)
    engine.observe(block(("n01.CPUPercent.total", 1.0)), "n01")
    engine.observe(block(("n02.CPUPercent.total", 1.0)), "n02")
    engine.observe(block(("n03.fructosa.up", 0.0)), None)  # lmaster's own datapoints do not make a node known
    clock.now += 50
    engine.observe(block(("n02.CPUPercent.total", 1.0), when=clock.now), "n02")
    clock.now += 11
    engine.tick()
    assert moves(seen) == [("n01", "ok", "firing")]
    assert engine.states("node-silent")["n01"].value == pytest.approx(61)
    engine.observe(block(("n01.CPUPercent.total", 1.0), when=clock.now), "n01")
    assert moves(seen)[-1] == ("n01", "firing", "resolved")


def test_node_silent_defaults_to_three_heartbeats():
    clock = Clock()
    engine = AlarmEvaluator(
        [], EvaluatorSettings(job_idle=False), clock, heartbeat_of=lambda node: 10.0 if node == "fast" else 100.0
    )
    engine.observe(block(("fast.a", 1.0), ("slow.a", 1.0)), "relay")
    clock.now += 31
    engine.tick()
    assert {key: state.status for key, state in engine.states("node-silent").items()} == {"fast": "firing"}


def test_job_idle_compares_cpu_use_with_allocated_cpus():
    clock = Clock()
    engine = AlarmEvaluator(
        [], EvaluatorSettings(node_silent=False, job_idle_fraction=0.25, job_idle_for=600), clock,
        job_cpus=lambda: {"7": 16, "8": 4},
    )  # fmt: skip
    for node in ("n01", "n02"):  # job 7: 2 CPUs busy of 16; job 8: 4 of 4
        engine.observe(block((f"{node}.SlurmJobs.job_7.cpu_percent", 100.0), (f"{node}.SlurmJobs.job_8.cpu_percent",
                                                                                200.0)), node)  # fmt: skip
    engine.tick()
    assert engine.states("job-idle")["7"].status == "pending"
    assert engine.states("job-idle")["8"].status == "ok"
    for _ in range(7):
        clock.now += 100
        engine.observe(block(("n01.SlurmJobs.job_7.cpu_percent", 100.0), when=clock.now), "n01")
        engine.observe(block(("n02.SlurmJobs.job_7.cpu_percent", 100.0), when=clock.now), "n02")
        engine.tick()
    assert engine.states("job-idle")["7"].status == "firing"
    assert engine.states("job-idle")["7"].value == pytest.approx(2.0)


def test_cached_layouts_follow_rule_changes():
    engine, seen = evaluator()
    engine.observe(block(("n01.CPUPercent.total", 99.0)), "n01")
    engine.add_rule(make_rule("hot", "*.CPUPercent.total", ">", 90))
    engine.observe(block(("n01.CPUPercent.total", 99.0)), "n01")
    assert moves(seen) == [("n01", "ok", "firing")]
    engine.remove_rule("hot")
    engine.observe(block(("n01.CPUPercent.total", 99.0)), "n01")
    assert len(seen) == 1


def test_observing_a_block_no_rule_cares_about_is_cheap():
    engine, _ = evaluator(*(make_rule(f"r{i}", f"*.Sensor{i}.value", ">", 1) for i in range(200)))
    big = Block.of([(f"n01.CPUPercent.{cpu}", (NOW, 1.0)) for cpu in range(500)])
    engine.observe(big, "n01")
    started = time.perf_counter()
    for _ in range(1000):
        engine.observe(big, "n01")
    assert (time.perf_counter() - started) / 1000 < 0.001  # measured about 5 µs per 500-datapoint block


def test_globs():
    engine, seen = evaluator(
        make_rule("a", "node0[1-2].{Disk,Net}IO.*", ">", 1), make_rule("b", "n?.x", ">", 1)
    )  # fmt: skip
    engine.observe(block(("node01.DiskIO.r", 5.0), ("node03.DiskIO.r", 5.0), ("node02.CpuIO.r", 5.0)), "relay")
    engine.observe(block(("n1.x", 5.0), ("n12.x", 5.0)), "relay")
    assert sorted((t.rule.name, t.key) for t in seen) == [("a", "node01"), ("b", "n1")]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"operator_name": "=>"}, "operator"),
        ({"operator_name": "; rm -rf /"}, "operator"),
        ({"value": "ninety"}, "value"),
        ({"value": float("nan")}, "value"),
        ({"value": True}, "value"),
        ({"metric": "CPUPercent"}, "metric"),
        ({"metric": "*.CPU Percent"}, "metric"),
        ({"metric": "*.{a,b"}, "metric"),
        ({"name": "x" * 101}, "name"),
        ({"name": "bad\nname"}, "name"),
        ({"name": "node-silent"}, "name"),
        ({"target": "galaxy"}, "target"),
        ({"severity": "doom"}, "severity"),
        ({"for_seconds": -1}, "for"),
        ({"target": "job"}, "metric"),
    ],
)
def test_bad_rules_name_their_field(fields, field):
    arguments = {"name": "r", "metric": "*.CPUPercent.total", "operator_name": ">", "value": 1, **fields}
    with pytest.raises(RuleError) as error:
        make_rule(**arguments)
    assert error.value.field == field


def test_firing_levels_are_emitted_on_changes_and_every_levels_interval():
    clock = Clock()
    emitted: list[Any] = []
    notifier = Notifier(emit=emitted.extend)
    engine, _ = evaluator(make_rule("hot", "*.x", ">", 1), make_rule("Other one", "*.y", ">", 1), clock=clock)
    engine.level_listeners.append(notifier.levels)
    engine.tick()
    assert emitted == [("fructosa.alarms.hot.firing", (NOW, 0.0)), ("fructosa.alarms.Other_one.firing", (NOW, 0.0))]
    clock.now += 1
    engine.observe(block(("n01.x", 5.0), ("n02.x", 5.0), when=clock.now), "relay")
    hot = "fructosa.alarms.hot.firing"
    assert emitted[2:] == [(hot, (NOW + 1, 1.0)), (hot, (NOW + 1, 2.0))]
    engine.tick()
    assert len(emitted) == 4  # within levels interval: nothing new
    clock.now += 10
    engine.tick()
    assert emitted[4:] == [("fructosa.alarms.hot.firing", (NOW + 11, 2.0)),
                           ("fructosa.alarms.Other_one.firing", (NOW + 11, 0.0))]  # fmt: skip


# -- store ----------------------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from fructosa.alarms.rules import make_rule
    from fructosa.alarms.store import AlarmStore, StoreError
    store = AlarmStore(sys.argv[1])
    rules = []
    for i in range(1_000_000):
        rules.append(make_rule(f"a{i}", "*.CPUPercent.total", ">", i))
        rules = rules[-50:]
        store.save(rules)
        if i == 5:
            print("writing", flush=True)
    """
)


def test_store_survives_kill_9_mid_write_loop(tmp_path):
    for attempt in range(3):
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE)
        assert process.stdout is not None and process.stdout.readline() == b"writing\n"
        time.sleep(0.05 * attempt)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        rules = AlarmStore(str(tmp_path)).load()
        assert rules, "the store must hold the last complete write"
        numbers = [int(rule.name[1:]) for rule in rules]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # one consistent write, not a mix
        assert all(rule.value == number for rule, number in zip(rules, numbers, strict=True))
        assert os.listdir(tmp_path) == ["alarms.json"]  # a killed write's temporary file is cleaned up


def test_store_round_trip_and_unreadable_entries(tmp_path, caplog):
    store = AlarmStore(str(tmp_path / "state"))
    rule = make_rule("High CPU", "*.CPUPercent.total", ">", 80, for_seconds=60, severity="critical")
    store.save([rule])
    assert store.load() == [rule]
    data = json.loads(Path(store.path).read_text())
    data["alarms"].append({"name": "broken", "operator": "~"})
    Path(store.path).write_text(json.dumps(data))
    assert store.load() == [rule]
    assert "broken" in caplog.text


# -- notifications --------------------------------------------------------------------------------------


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 30) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout))


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_webhook_is_retried_until_delivered_and_events_posted():
    received: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    failures = [2]

    async def hook(request: web.Request) -> web.Response:
        if failures[0]:
            failures[0] -= 1
            return web.Response(status=503)
        received.append(await request.json())
        return web.Response(text="ok")

    async def graphite_events(request: web.Request) -> web.Response:
        events.append(await request.json())
        return web.Response(text="ok")

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_post("/events/", graphite_events)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        emitted: list[Any] = []
        stream: list[dict[str, Any]] = []
        notifier = Notifier(
            NotifySettings(f"http://127.0.0.1:{port}/hook", f"http://127.0.0.1:{port}/events/", backoff=0.05),
            emit=emitted.extend, on_event=stream.append,
        )  # fmt: skip
        clock = Clock()
        engine = AlarmEvaluator([make_rule("High CPU", "*.CPUPercent.total", ">", 90, severity="critical")],
                                EvaluatorSettings(node_silent=False, job_idle=False), clock)  # fmt: skip
        engine.listeners.append(notifier.transition)
        engine.level_listeners.append(notifier.levels)
        delivery = asyncio.create_task(notifier.run())
        engine.observe(block(("n01.CPUPercent.total", 95.0)), "n01")
        # Never waits for the webhook: observe() returned before any delivery was even tried (they run later,
        # on this loop), however long a loaded machine took to run it.
        assert notifier.counters["attempts"] == 0 and failures == [2] and received == []
        await wait_for(lambda: len(received) == 1 and len(events) == 1)
        assert notifier.counters["attempts"] == 4  # two 503s, then the webhook; the event at once
        alert = received[0]
        assert alert["status"] == "firing"
        assert alert["labels"] == {"alertname": "High CPU", "severity": "critical", "target": "node",
                                   "node": "n01", "source": "fructosa"}  # fmt: skip
        assert alert["startsAt"].startswith("2027-01-15T08:00:00") and alert["endsAt"].startswith("0001")
        assert events[0]["tags"] == ["fructosa", "alarm", "High_CPU", "n01"]
        assert ("fructosa.alarms.High_CPU.firing", (NOW, 1.0)) in emitted
        assert stream[0]["to"] == "firing" and stream[0]["alarm"] == "High CPU"
        clock.now += 10
        engine.observe(block(("n01.CPUPercent.total", 5.0), when=clock.now), "n01")
        await wait_for(lambda: len(received) == 2)
        assert received[1]["status"] == "resolved" and received[1]["endsAt"].startswith("2027-01-15T08:00:10")
        delivery.cancel()
        await runner.cleanup()

    run(scenario)


def test_webhook_failures_are_counted_and_a_full_queue_drops(caplog):
    async def scenario() -> None:
        notifier = Notifier(NotifySettings("http://127.0.0.1:9/nothing", retries=1, backoff=0.01, queue_size=2))
        engine, _ = evaluator(make_rule("hot", "*.x", ">", 1))
        engine.listeners.append(notifier.transition)
        engine.observe(block(*((f"n{i}.x", 5.0) for i in range(5))), "relay")
        assert notifier.counters["dropped"] == 3
        delivery = asyncio.create_task(notifier.run())
        await wait_for(lambda: notifier.counters["failed"] == 2)
        assert notifier.counters["attempts"] == 4
        delivery.cancel()

    run(scenario)
    assert "alarm notification to http://127.0.0.1:9/nothing failed" in caplog.text


# -- HTTP -----------------------------------------------------------------------------------------------

CONFIGURED = make_rule("disk-full", "*.DiskUsage.percent", ">", 95, origin="configuration")


def service(tmp_path: Path, max_alarms: int = 1000) -> AlarmService:
    engine = AlarmEvaluator([CONFIGURED], EvaluatorSettings(job_idle=False), Clock())
    return AlarmService(engine, AlarmStore(str(tmp_path / "alarms")), max_alarms=max_alarms)


def with_client(
    tmp_path: Path, test: Callable[[TestClient, AlarmService], Awaitable[None]], max_alarms: int = 1000, **kw: Any
) -> None:
    kw.setdefault("token", TOKEN)
    alarms = service(tmp_path, max_alarms)
    app = make_app(HttpSettings(**kw), HttpState(StaticNodes(), LatestValues(), clock=lambda: NOW))
    add_alarm_routes(app, alarms)
    add_action_routes(app, alarms.actions)

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            await test(client, alarms)

    run(scenario)


async def checked(client: TestClient, response: Any, status: int, path: str, method: str = "get") -> Any:
    """The JSON body, after checking status and the app's own OpenAPI description of it."""
    body = await response.json(content_type=None)
    assert response.status == status, body
    document = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    schema = document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({"components": document["components"], "allOf": [schema]}).validate(body)
    return body


def test_metric_proxy_curl_shapes(tmp_path):
    async def test(client: TestClient, alarms: AlarmService) -> None:
        add = {"name": "High CPU", "target": "main", "metric": "*.CPUPercent.total", "operation": ">", "value": 80}
        response = await client.post("/alarms/add", json=add, headers=AUTH)
        assert await response.json() == {"operation": "alarm registered", "success": True}
        for body in (
            {"name": "hot-n01", "target": "n01", "metric": "CPUPercent.total", "operation": "More", "value": 99},
            {"name": "job-rss", "target": "4242", "metric": "rss", "operation": "<", "value": 1.5},
            {"name": "eq", "target": "main", "metric": "*.x.y", "operation": "=", "value": 0},
            {"name": "n02-glob", "target": "n02", "metric": "*.Load.*", "operation": "Less", "value": 0},
        ):
            assert (await (await client.post("/alarms/add", json=body, headers=AUTH)).json())["success"] is True
        rules = {rule.name: rule for rule in alarms.rules()}
        assert rules["High CPU"].target == "cluster-mean"
        assert (rules["hot-n01"].target, rules["hot-n01"].metric) == ("node", "n01.CPUPercent.total")
        assert (rules["job-rss"].target, rules["job-rss"].job) == ("job", "4242")
        assert rules["job-rss"].metric == "*.SlurmJobs.job_4242.rss"
        assert rules["eq"].operator == "=="
        assert (rules["n02-glob"].metric, rules["n02-glob"].operator) == ("n02.Load.*", "<")
        alarms.observe(block(("n01.CPUPercent.total", 100.0)), "n01")
        alarms.evaluator.tick()
        listing = await (await client.get("/alarms/list", headers=AUTH)).json()
        assert set(listing) == {"main", "n01", "n02", "4242"}
        high = next(entry for entry in listing["main"] if entry["name"] == "High CPU")
        assert high == {"name": "High CPU", "metric": "*.CPUPercent.total", "operator": {"More": 80.0},
                        "current": 100.0, "active": True, "pretty": rules["High CPU"].pretty}  # fmt: skip
        assert listing["n01"][0]["operator"] == {"More": 99.0} and listing["n01"][0]["active"] is True
        raised = await (await client.get("/alarms", headers=AUTH)).json()
        assert {entry["name"] for entries in raised.values() for entry in entries} == {"High CPU", "hot-n01"}
        response = await client.get("/alarms/del?targetjob=main&name=High CPU", headers=AUTH)
        assert await response.json() == {"operation": "Deleted High CPU from main", "success": True}
        response = await client.post("/alarms/del", json={"target": "4242", "name": "job-rss"}, headers=AUTH)
        assert await response.json() == {"operation": "Deleted job-rss from 4242", "success": True}
        response = await client.post("/alarms/del", json={"target": "main", "name": "job-rss"}, headers=AUTH)
        assert response.status == 400 and (await response.json())["success"] is False
        response = await client.get("/alarms/del?targetjob=main&name=disk-full", headers=AUTH)
        assert response.status == 409 and "configuration" in (await response.json())["operation"]
        assert {rule.name for rule in AlarmStore(str(tmp_path / "alarms")).load()} == {"hot-n01", "eq", "n02-glob"}

    with_client(tmp_path, test)


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ({"name": "a", "target": "main", "metric": "*.x", "operation": "=>", "value": 1}, "operation"),
        ({"name": "a", "target": "main", "metric": "*.x", "operation": "$(reboot)", "value": 1}, "operation"),
        ({"name": "a", "target": "main", "metric": "*.x", "operation": ">", "value": "80"}, "value"),
        ({"name": "a", "target": "main", "metric": "*.x", "operation": ">", "value": None}, "value"),
        ({"name": "a", "target": "main", "metric": "*.x", "operation": ">"}, "value"),
        ({"name": "a", "target": "../etc", "metric": "*.x", "operation": ">", "value": 1}, "target"),
        ({"name": "a\n", "target": "main", "metric": "*.x", "operation": ">", "value": 1}, "name"),
        ({"name": "a", "target": "main", "metric": "*.x y", "operation": ">", "value": 1}, "metric"),
        ({"name": "disk-full", "target": "main", "metric": "*.x", "operation": ">", "value": 1}, "exists"),
        ([1, 2], "JSON object"),
    ],
)
def test_metric_proxy_add_refuses_bad_definitions(tmp_path, body, word):
    async def test(client: TestClient, alarms: AlarmService) -> None:
        response = await client.post("/alarms/add", json=body, headers=AUTH)
        answer = await response.json()
        assert response.status == 400 and answer["success"] is False and word in answer["operation"], answer
        assert [rule.name for rule in alarms.rules()] == ["node-silent", "disk-full"]

    with_client(tmp_path, test)


def test_api_alarms(tmp_path):
    async def test(client: TestClient, alarms: AlarmService) -> None:
        async def post(body: Any, status: int) -> Any:
            return await checked(client, await client.post("/api/alarms", json=body, headers=AUTH), status,
                                 "/api/alarms", "post")  # fmt: skip

        async def delete(name: str, status: int) -> Any:
            response = await client.delete(f"/api/alarms/{name}", headers=AUTH)
            return await checked(client, response, status, "/api/alarms/{name}", "delete")

        new = {"name": "hot", "metric": "*.CPUPercent.total", "operator": ">=", "value": 90, "for": 60,
               "severity": "critical"}  # fmt: skip
        body = await post(new, 201)
        assert (body["for"], body["severity"], body["origin"], body["status"]) == (60, "critical", "api", "ok")
        await post(new, 409)
        alarms.observe(block(("n01.CPUPercent.total", 95.0), ("n02.CPUPercent.total", 5.0)), "relay")
        body = await checked(client, await client.get("/api/alarms/hot", headers=AUTH), 200, "/api/alarms/{name}")
        assert body["status"] == "pending" and body["since"] == NOW
        assert body["states"]["n01"] == {"status": "pending", "since": NOW, "value": 95.0}
        assert body["states"]["n02"]["status"] == "ok"
        listing = await checked(client, await client.get("/api/alarms", headers=AUTH), 200, "/api/alarms")
        assert [alarm["name"] for alarm in listing["alarms"]] == ["node-silent", "disk-full", "hot"]
        assert listing["max_alarms"] == 1000
        for bad, field in (({**new, "name": "x", "operator": "=>"}, "operator"), ({**new, "name": "x", "value": "9"},
                           "value"), ({**new, "name": "x", "colour": 1}, "colour"), ({**new, "name": "x", "for": -5},
                           "for"), ({**new, "name": "x", "action": "nope"}, "action")):  # fmt: skip
            answer = await post(bad, 400)
            assert field in answer["error"], answer
        await delete("disk-full", 409)
        await delete("node-silent", 409)
        await delete("nope", 404)
        await delete("hot", 200)
        assert AlarmStore(str(tmp_path / "alarms")).load() == []

    with_client(tmp_path, test)


def test_openapi_documents_the_alarm_and_action_routes(tmp_path):
    async def test(client: TestClient, alarms: AlarmService) -> None:
        document = await (await client.get("/api/openapi.json", headers=AUTH)).json()
        served = {resource.canonical for resource in client.app.router.resources()}
        alarm_paths = {path for path in document["paths"] if "alarms" in path or "actions" in path}
        assert alarm_paths == {path for path in served if "alarms" in path or "actions" in path}
        for path in alarm_paths:
            for operation in document["paths"][path].values():
                assert "401" in operation["responses"], path
        for schema in document["components"]["schemas"].values():
            jsonschema.Draft202012Validator.check_schema(schema)

    with_client(tmp_path, test)


def test_changes_need_the_token_even_with_public_read(tmp_path):
    async def test(client: TestClient, alarms: AlarmService) -> None:
        add = {"name": "a", "target": "main", "metric": "*.x", "operation": ">", "value": 1}
        assert (await client.post("/alarms/add", json=add)).status == 401
        assert (await client.get("/alarms/del?targetjob=main&name=disk-full")).status == 401
        assert (await client.post("/api/alarms", json={})).status == 401
        assert (await client.delete("/api/alarms/disk-full")).status == 401
        assert (await client.get("/alarms/list")).status == 200  # reading is public here
        assert (await client.get("/api/alarms")).status == 200
        assert [rule.name for rule in alarms.rules()] == ["node-silent", "disk-full"]

    with_client(tmp_path, test, public_read=True)


def test_ten_thousand_alarms_stop_at_the_documented_limit(tmp_path):
    async def test(client: TestClient, alarms: AlarmService) -> None:
        refused = 0
        for number in range(10_000):
            body = {"name": f"a{number}", "target": "main", "metric": "*.x", "operation": ">", "value": number}
            response = await client.post("/alarms/add", json=body, headers=AUTH)
            if response.status == 400:
                refused += 1
                assert "at most 50 alarms" in (await response.json())["operation"]
            if number > 100:
                break
        assert refused == 102 - 48
        assert len(list(alarms.rules())) == 50
        with pytest.raises(LimitReached):
            alarms.add(make_rule("more", "*.x", ">", 1))

    with_client(tmp_path, test, max_alarms=50)


def test_ten_thousand_definitions_through_the_service_are_bounded(tmp_path):
    alarms = service(tmp_path, max_alarms=1000)
    alarms.store = AlarmStore(None)  # the bound, not the disk, is under test here
    refused = 0
    for number in range(10_000):
        try:
            alarms.add(make_rule(f"a{number}", f"*.s{number}", ">", number))
        except LimitReached:
            refused += 1
    assert refused == 10_000 - 998 and len(list(alarms.rules())) == 1000


def test_stored_alarms_come_back_after_a_restart(tmp_path):
    first = service(tmp_path)
    first.add(make_rule("kept", "*.x", ">", 1, for_seconds=5))
    second = service(tmp_path)
    assert [rule.name for rule in second.rules()] == ["node-silent", "disk-full", "kept"]
    assert second.evaluator.runtimes["kept"].rule.for_seconds == 5


def test_cli_against_a_test_server(tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN.decode() + "\n")

    async def test(client: TestClient, alarms: AlarmService) -> None:
        url = str(client.make_url("/")).rstrip("/")
        base = ["--url", url, "--token-file", str(token_file)]
        add = [*base, "add", "hot node", "--metric", "*.CPUPercent.total", "--operator", ">", "--value", "90",
               "--for", "30", "--severity", "critical"]  # fmt: skip
        assert await asyncio.to_thread(cli.main, add) == 0
        assert "added: hot node" in capsys.readouterr().out
        assert await asyncio.to_thread(cli.main, add) == 1
        assert "HTTP 409" in capsys.readouterr().err
        assert await asyncio.to_thread(cli.main, [*base, "list"]) == 0
        out = capsys.readouterr().out
        assert "hot node" in out and "disk-full" in out and "3 alarms (at most 1000)" in out
        assert await asyncio.to_thread(cli.main, [*base, "del", "disk-full"]) == 1
        assert "HTTP 409" in capsys.readouterr().err
        assert await asyncio.to_thread(cli.main, [*base, "del", "hot node"]) == 0
        assert "deleted: hot node" in capsys.readouterr().out
        assert await asyncio.to_thread(cli.main, ["--url", url, "list"]) == 1
        assert "HTTP 401" in capsys.readouterr().err
        assert await asyncio.to_thread(cli.main, ["--url", "http://127.0.0.1:9", "list"]) == 1
        assert "cannot reach" in capsys.readouterr().err

    with_client(tmp_path, test)


# -- configuration --------------------------------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "lmaster.conf"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_configuration_declares_alarms_and_actions(tmp_path):
    path = write_config(tmp_path, """
        [alarms]
        silent after = 45
        job idle = no
        webhook = http://127.0.0.1:9093/hook
        state dir = none
        [alarm:hot]
        metric = *.CPUPercent.total
        operator = >=
        value = 95
        for = 300
        severity = critical
        action = drain
        [alarm:fat jobs]
        metric = *.SlurmJobs.job_*.rss
        operator = >
        value = 1e12
        target = job
        [action:drain]
        command = scontrol update nodename={node} state=drain "reason=fructosa alarm"
        arguments = node
        node pattern = node[0-9]{2}
        timeout = 10
    """)  # fmt: skip
    config = load_master_config(path)
    assert config.warnings == ()
    assert config.alarms.silent_after == 45 and config.alarms.job_idle is False and config.alarms.state_dir is None
    assert [(rule.name, rule.operator, rule.for_seconds, rule.origin) for rule in config.alarm_rules] == [
        ("hot", ">=", 300.0, "configuration"), ("fat jobs", ">", 0.0, "configuration")]  # fmt: skip
    (action,) = config.actions
    assert action.command == ("scontrol", "update", "nodename={node}", "state=drain", "reason=fructosa alarm")
    assert action.patterns == {"node": "node[0-9]{2}"} and action.timeout == 10
    alarms = AlarmService.from_config(config)
    assert [rule.name for rule in alarms.rules()] == ["node-silent", "hot", "fat jobs"]


def test_state_dir_must_be_usable_unless_it_is_the_default(tmp_path, caplog, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(StoreError, match="state dir"):
        usable_state_dir(str(blocked / "alarms"))
    assert usable_state_dir(str(tmp_path / "new")) == str(tmp_path / "new") and (tmp_path / "new").is_dir()
    monkeypatch.setattr("fructosa.config.alarms.DEFAULT_ALARM_STATE_DIR", str(blocked / "alarms"))
    assert usable_state_dir(str(blocked / "alarms")) is None
    assert "until lmaster stops" in caplog.text


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("[alarm:a]\nmetric = *.x\noperator = =>\nvalue = 1", "[alarm:a] operator = '=>': one of"),
        ("[alarm:a]\nmetric = *.x\noperator = >\nvalue = lots", "[alarm:a] value = 'lots': 'lots' is not a number"),
        ("[alarm:a]\nmetric = *.x\noperator = >", "[alarm:a] value is missing"),
        ("[alarm:a]\nmetric = x\noperator = >\nvalue = 1", "[alarm:a] metric = 'x': bad metric"),
        ("[alarm:a]\nmetric = *.x\noperator = >\nvalue = 1\ntarget = job", "[alarm:a] metric = '*.x'"),
        ("[alarm:a]\nmetric = *.x\noperator = >\nvalue = 1\naction = nope", "[alarm:a] action = 'nope': no [action"),
        ("[alarm:node-silent]\nmetric = *.x\noperator = >\nvalue = 1", "[alarm:node-silent] section name"),
        ("[action:a]\ncommand = rm {path}", "[action:a] command = 'rm {path}': {path} is not among"),
        ("[action:a]\ncommand = {prog} x\narguments = prog", "the program itself cannot be an argument"),
        ("[action:a]\ncommand = echo 'unclosed\n", '[action:a] command = "echo \'unclosed": No closing quotation'),
        ("[action:a]\ncommand = echo {x}\narguments = x\nx pattern = ([", "[action:a] x pattern = '([': not a regular"),
        ("[alarms]\njob idle fraction = 2", "[alarms] job idle fraction = '2': a fraction"),
    ],
)
def test_bad_configuration_stops_with_one_line(tmp_path, section, expected):
    path = write_config(tmp_path, section)
    with pytest.raises(ConfigError) as error:
        load_master_config(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(path), message
    assert expected in message, message
