"""Actions: hostile arguments refused before anything runs, timeouts kill the process group,
output capped, audit lines, the HTTP route, and an alarm that runs its action when it fires."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fructosa.alarms.actions import ActionError, ActionRunner, make_action
from fructosa.alarms.evaluator import AlarmEvaluator, EvaluatorSettings
from fructosa.alarms.rules import make_rule
from fructosa.alarms.service import AlarmService
from fructosa.http.actions import add_action_routes
from fructosa.http.app import make_app
from fructosa.http.settings import HttpSettings
from fructosa.http.state import HttpState, StaticNodes
from fructosa.taps.latest import LatestValues
from fructosa.wire.blocks import Block

pytestmark = pytest.mark.timeout(60)

TOKEN = b"action-token-0123456789"
AUTH = {"Authorization": "Bearer " + TOKEN.decode()}
TOUCH = shutil.which("touch") or "/usr/bin/touch"
HOSTILE = [
    "a;touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "a\ntouch pwned",
    "a\n",
    "../pwned",
    "..",
    "a b",
    "a|b",
    "a&b",
    "a>b",
    "-rf /",
    "",
    "x" * 300,
]


def run(scenario: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), timeout))


def touch_action(directory: Path) -> ActionRunner:
    return ActionRunner([make_action("touch", f"{TOUCH} {directory}/{{name}}", ["name"])])


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_arguments_are_refused_before_anything_runs(tmp_path, value, caplog):
    runner = touch_action(tmp_path)
    with pytest.raises(ActionError):
        run(lambda: runner.run("touch", {"name": value}, caller="127.0.0.1"))
    assert list(tmp_path.iterdir()) == []
    assert runner.runs == 0
    assert "action touch refused for 127.0.0.1" in caplog.text


@pytest.mark.parametrize(
    "arguments", [{}, {"name": "a", "other": "b"}, {"name": ["a"]}, {"name": None}, {"name": True}, ["name"]]
)
def test_missing_unknown_or_non_string_arguments_are_refused(tmp_path, arguments):
    runner = touch_action(tmp_path)
    with pytest.raises(ActionError):
        run(lambda: runner.run("touch", arguments))
    assert list(tmp_path.iterdir()) == []


def test_a_good_argument_runs_without_a_shell(tmp_path, caplog):
    caplog.set_level(logging.INFO, "fructosa.audit")
    runner = touch_action(tmp_path)
    result = run(lambda: runner.run("touch", {"name": "node01.ok"}, caller="10.0.0.9"))
    assert result == {"action": "touch", "arguments": {"name": "node01.ok"}, "result": "success", "exit_status": 0,
                      "output": ""}  # fmt: skip
    assert [path.name for path in tmp_path.iterdir()] == ["node01.ok"]
    assert "action touch run for 10.0.0.9 with {'name': 'node01.ok'}: success (exit status 0" in caplog.text


def test_a_pattern_narrows_what_an_argument_may_be(tmp_path):
    runner = ActionRunner([make_action("touch", f"{TOUCH} {tmp_path}/{{node}}", ["node"], {"node": "node[0-9]{2}"})])
    with pytest.raises(ActionError, match="must match node"):
        run(lambda: runner.run("touch", {"node": "node1"}))
    assert run(lambda: runner.run("touch", {"node": "node12"}))["result"] == "success"
    assert [path.name for path in tmp_path.iterdir()] == ["node12"]


def test_an_action_that_hangs_is_killed_with_its_group_at_its_timeout(tmp_path):
    marker = tmp_path / "grandchild-survived"
    grandchild = tmp_path / "grandchild.py"
    grandchild.write_text(f"import time\ntime.sleep(2)\nopen({str(marker)!r}, 'w')\n")
    script = tmp_path / "hang.py"
    script.write_text(
        f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, {str(grandchild)!r}])\n"
        "print('started', flush=True)\ntime.sleep(60)\n"
    )
    runner = ActionRunner([make_action("hang", f"{sys.executable} {script}", timeout=1.0)])
    started = time.monotonic()
    result = run(lambda: runner.run("hang", {}))
    assert time.monotonic() - started < 30  # killed at its 1-s timeout, not after the script's 60 s (loaded: late)
    assert result["result"] == "failed" and result["exit_status"] is None
    assert result["output"].startswith("started") and "[killed after 1 s]" in result["output"]
    time.sleep(2.5)
    assert not marker.exists(), "the whole process group must be killed"


def test_failures_and_output_are_reported_and_output_is_capped():
    chatty = make_action("chatty", f"{sys.executable} -c \"print('x' * 200000); raise SystemExit(3)\"")
    missing = make_action("missing", "/nonexistent/program")
    runner = ActionRunner([chatty, missing], output_cap=1000)
    result = run(lambda: runner.run("chatty", {}))
    assert result["result"] == "failed" and result["exit_status"] == 3
    assert result["output"].startswith("x" * 1000) and "[199001 more bytes of output dropped]" in result["output"]
    assert len(result["output"]) < 1100
    result = run(lambda: runner.run("missing", {}))
    assert result["result"] == "failed" and result["exit_status"] is None and "cannot start" in result["output"]
    assert runner.failures == 2


@pytest.mark.parametrize(
    ("command", "arguments", "patterns", "timeout", "problem"),
    [
        ("", (), {}, 30, "command: empty"),
        ("rm {path}", (), {}, 30, "{path} is not among"),
        ("echo {x.__class__}", ("x",), {}, 30, "not a plain"),
        ("echo {x!r}", ("x",), {}, 30, "not a plain"),
        ("echo {0}", ("x",), {}, 30, "not a plain"),
        ("{x}", ("x",), {}, 30, "the program itself"),
        ("echo {x}", ("X-Y",), {}, 30, "is not a name"),
        ("echo {x}", ("x",), {"y": "a"}, 30, "y pattern"),
        ("echo {x}", ("x",), {"x": "(["}, 30, "not a regular expression"),
        ("echo {x}", ("x",), {}, 0, "timeout"),
    ],
)
def test_bad_action_declarations(command, arguments, patterns, timeout, problem):
    with pytest.raises(ValueError, match=problem.replace("{", r"\{").replace("(", r"\(").replace("[", r"\[")):
        make_action("a", command, arguments, patterns, timeout)


def with_client(runner: ActionRunner, test: Callable[[TestClient], Awaitable[None]], **settings: Any) -> None:
    app = make_app(HttpSettings(token=TOKEN, **settings), HttpState(StaticNodes(), LatestValues()))
    add_action_routes(app, runner)

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            await test(client)

    run(scenario)


def test_http_actions(tmp_path):
    runner = touch_action(tmp_path)

    async def test(client: TestClient) -> None:
        listing = await (await client.get("/api/actions", headers=AUTH)).json()
        assert listing == {"actions": [{"name": "touch", "command": [TOUCH, f"{tmp_path}/{{name}}"],
                                        "arguments": {"name": "[A-Za-z0-9._-]+"}, "timeout": 30.0}]}  # fmt: skip
        assert (await client.post("/api/actions/touch", json={"arguments": {"name": "a"}})).status == 401
        for value in HOSTILE[:6]:
            response = await client.post("/api/actions/touch", json={"arguments": {"name": value}}, headers=AUTH)
            assert response.status == 400 and "name" in (await response.json())["error"]
        response = await client.post("/api/actions/touch", json={"argumentz": {}}, headers=AUTH)
        assert response.status == 400 and "argumentz" in (await response.json())["error"]
        response = await client.post("/api/actions/nope", json={}, headers=AUTH)
        assert response.status == 404
        assert list(tmp_path.iterdir()) == []
        response = await client.post("/api/actions/touch", json={"arguments": {"name": "done"}}, headers=AUTH)
        assert (await response.json())["result"] == "success"
        assert [path.name for path in tmp_path.iterdir()] == ["done"]

    with_client(runner, test, public_read=True)


def test_an_alarm_runs_its_action_when_it_fires(tmp_path):
    runner = ActionRunner([make_action("mark", f"{TOUCH} {tmp_path}/{{alarm}}-{{node}}", ["alarm", "node"])])
    rule = make_rule("hot", "*.CPUPercent.total", ">", 90, action="mark")
    alarms = AlarmService(AlarmEvaluator([rule], EvaluatorSettings(node_silent=False, job_idle=False)), actions=runner)

    async def scenario() -> None:
        now = time.time()
        alarms.observe(Block.of([("n01.CPUPercent.total", (now, 99.0)), ("n02.CPUPercent.total", (now, 1.0))]), "x")
        deadline = time.monotonic() + 10
        while not (tmp_path / "hot-n01").exists():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await alarms.close()

    run(scenario)
    assert os.listdir(tmp_path) == ["hot-n01"]
