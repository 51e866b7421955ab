"""lagent's lean event loop: asyncio's behaviours the agent relies on hold on it, its tick slot fires,
re-arms and survives a failing callback, the sensor scheduler ticks through the slot, and an asyncio
without the private parts the turn relies on gives lagent asyncio's standard loop. No timing is asserted:
every wait polls towards a generous deadline."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fructosa.adaptive import AdaptivePlan
from fructosa.agent import lean_loop
from fructosa.agent.lean_loop import LeanEventLoop, LeanLoopUnsupported, agent_event_loop
from fructosa.agent.scheduler import SensorScheduler
from fructosa.config import SensorConfig
from fructosa.sensors import REGISTRY, Sensor, register
from tests.support.configs import agent_ini

TIMEOUT = 20.0
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def loop() -> Iterator[LeanEventLoop]:
    lean = LeanEventLoop()
    yield lean
    if not lean.is_closed():
        lean.close()


def run(loop: asyncio.AbstractEventLoop, scenario: Callable[[], Awaitable[Any]]) -> Any:
    return loop.run_until_complete(asyncio.wait_for(scenario(), TIMEOUT))


async def until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():
        assert time.monotonic() < deadline, f"not within {TIMEOUT} s: {what}"
        await asyncio.sleep(0.005)


# -- asyncio's behaviours ------------------------------------------------------


def test_agent_event_loop_is_the_lean_loop_on_this_python() -> None:
    agent_loop = agent_event_loop()
    try:
        assert isinstance(agent_loop, LeanEventLoop)
    finally:
        agent_loop.close()


def test_call_soon_runs_in_order_and_what_a_callback_schedules_runs_in_a_later_turn(loop: LeanEventLoop) -> None:
    order: list[str] = []

    def first() -> None:
        order.append("first")
        loop.call_soon(order.append, "scheduled by first")

    async def scenario() -> None:
        loop.call_soon(first)
        loop.call_soon(order.append, "second")
        cancelled = loop.call_soon(order.append, "cancelled")
        loop.call_soon(order.append, "third")
        cancelled.cancel()
        await until(lambda: len(order) == 4, "four callbacks")

    run(loop, scenario)
    assert order == ["first", "second", "third", "scheduled by first"]


def test_timers_run_in_time_order_and_cancelled_ones_never(loop: LeanEventLoop) -> None:
    order: list[int] = []

    async def scenario() -> None:
        now = loop.time()
        for delay in (0.05, 0.01, 0.03):
            loop.call_at(now + delay, order.append, int(delay * 100))
        loop.call_later(0.02, order.append, 2)
        loop.call_later(0.04, order.append, 99).cancel()
        loop.call_later(0.0, order.append, 0)
        await until(lambda: len(order) == 5, "five timers")
        await asyncio.sleep(0.05)  # past the cancelled one's time

    run(loop, scenario)
    assert order == [0, 1, 2, 3, 5]


def test_many_cancelled_timers_are_dropped_from_the_heap_and_the_live_ones_still_fire(loop: LeanEventLoop) -> None:
    fired: list[int] = []

    async def scenario() -> None:
        timers = [loop.call_later(3600 + index, fired.append, index) for index in range(300)]
        for timer in timers[:250]:
            timer.cancel()
        soon = [loop.call_later(0.01 * index, fired.append, -index) for index in range(1, 4)]
        await until(lambda: len(fired) == 3, "the three near timers")
        await asyncio.sleep(0)  # one more turn: the rebuild has happened by now
        assert loop._timer_cancelled_count == 0 and not any(timer.cancelled() for timer in loop._scheduled)
        assert sum(1 for timer in loop._scheduled if timer in timers) == 50
        assert not any(timer._scheduled for timer in soon)
        for timer in timers[250:]:
            timer.cancel()

    run(loop, scenario)
    assert fired == [-1, -2, -3]


def test_readers_see_their_data_and_a_removed_reader_nothing_more(loop: LeanEventLoop) -> None:
    reading, writing = socket.socketpair()
    reading.setblocking(False)
    received: list[bytes] = []

    def readable() -> None:
        received.append(reading.recv(100))

    async def scenario() -> None:
        loop.add_reader(reading.fileno(), readable)
        writing.send(b"one")
        await until(lambda: received == [b"one"], "the first read")
        assert loop.remove_reader(reading.fileno())
        writing.send(b"two")
        for _ in range(20):
            await asyncio.sleep(0.001)
        assert received == [b"one"]
        loop.add_reader(reading.fileno(), readable)
        await until(lambda: received == [b"one", b"two"], "the read after adding the reader back")
        loop.remove_reader(reading.fileno())

    try:
        run(loop, scenario)
    finally:
        reading.close()
        writing.close()


def test_streams_tasks_futures_and_wait_for_work(loop: LeanEventLoop) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    async def scenario() -> tuple[bytes, str]:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        line = await reader.readline()
        writer.close()
        server.close()
        await server.wait_closed()
        future = loop.create_future()
        loop.call_later(0.01, future.set_result, "done")
        task = asyncio.create_task(asyncio.sleep(0.01, "slept"))
        results = await asyncio.gather(future, task)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(3600), 0.02)
        return line, "+".join(results)

    assert run(loop, scenario) == (b"hello\n", "done+slept")


def test_executor_and_threadsafe_calls_wake_the_loop_from_another_thread(loop: LeanEventLoop) -> None:
    async def scenario() -> tuple[int, str]:
        in_executor = await loop.run_in_executor(None, threading.get_ident)
        woken = loop.create_future()
        threading.Thread(target=lambda: loop.call_soon_threadsafe(woken.set_result, "woken")).start()
        return in_executor, await woken

    executor_thread, woken = run(loop, scenario)
    assert executor_thread != threading.get_ident() and woken == "woken"


def test_signal_handlers_run_on_the_loop(loop: LeanEventLoop) -> None:
    received: list[int] = []

    async def scenario() -> None:
        loop.add_signal_handler(signal.SIGUSR1, received.append, signal.SIGUSR1)
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            await until(lambda: received == [signal.SIGUSR1], "the signal handler")
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)

    run(loop, scenario)


def test_stop_ends_run_forever_and_close_closes(loop: LeanEventLoop) -> None:
    turns: list[str] = []
    loop.call_soon(turns.append, "ran")
    loop.call_soon(loop.stop)
    loop.call_later(3600, turns.append, "never")
    loop.run_forever()
    assert turns == ["ran"] and not loop.is_running()
    loop.close()
    assert loop.is_closed()
    with pytest.raises(RuntimeError):
        loop.call_soon(turns.append, "after close")


def test_debug_mode_runs_the_same_turn(loop: LeanEventLoop) -> None:
    loop.set_debug(True)
    order: list[str] = []
    slot = loop.claim_tick_slot(lambda: order.append("tick"))
    assert slot is not None

    async def scenario() -> None:
        loop.call_soon(order.append, "soon")
        slot.arm(loop.time() + 0.01)
        await until(lambda: order == ["soon", "tick"], "the callback and the tick")

    run(loop, scenario)


# -- the tick slot -------------------------------------------------------------


def test_the_tick_slot_fires_at_its_time_rearms_and_disarms(loop: LeanEventLoop) -> None:
    fired: list[float] = []
    armed_for: list[float] = []

    def tick() -> None:
        fired.append(loop.time())
        if len(fired) < 3:
            armed_for.append(loop.time() + 0.02)
            slot.arm(armed_for[-1])

    slot = loop.claim_tick_slot(tick)
    assert slot is not None
    assert loop.claim_tick_slot(lambda: None) is None  # one claimant at a time

    async def scenario() -> None:
        armed_for.append(loop.time() + 0.02)
        slot.arm(armed_for[-1])
        await until(lambda: len(fired) == 3, "three ticks")
        slot.arm(loop.time() + 0.01)
        slot.disarm()
        await asyncio.sleep(0.05)

    run(loop, scenario)
    assert len(fired) == 3
    resolution = time.get_clock_info("monotonic").resolution
    assert all(when >= due - resolution for when, due in zip(fired, armed_for, strict=True))
    assert all(timer._callback is not tick for timer in loop._scheduled)  # no timer handle for the ticks
    slot.release()
    assert loop.claim_tick_slot(lambda: None) is not None


def test_the_tick_runs_in_time_order_among_the_timers_due_in_its_turn(loop: LeanEventLoop) -> None:
    """As a timer would: after a timer due before it, before one due after it, which it may cancel (the
    agent's report rides on the tick and cancels its own timer, due just after)."""
    order: list[str] = []
    timers: dict[str, asyncio.TimerHandle] = {}

    def tick() -> None:
        order.append("tick")
        timers["cancelled by the tick"].cancel()

    slot = loop.claim_tick_slot(tick)
    assert slot is not None

    def arm_all_in_the_past() -> None:  # one callback: all due in the same later turn
        now = loop.time()
        loop.call_at(now - 0.003, order.append, "before")
        slot.arm(now - 0.002)
        timers["cancelled by the tick"] = loop.call_at(now - 0.0015, order.append, "cancelled by the tick")
        loop.call_at(now - 0.001, order.append, "after")

    async def scenario() -> None:
        loop.call_soon(arm_all_in_the_past)
        await until(lambda: len(order) == 3, "the timers and the tick")
        await asyncio.sleep(0.01)

    run(loop, scenario)
    assert order == ["before", "tick", "after"]


def test_a_failing_tick_goes_to_the_exception_handler_and_the_next_tick_still_comes(loop: LeanEventLoop) -> None:
    handled: list[dict[str, Any]] = []
    ticks: list[int] = []

    def tick() -> None:
        ticks.append(len(ticks))
        slot.arm(loop.time() + 0.01)
        if len(ticks) == 1:
            raise ValueError("the first tick fails")

    slot = loop.claim_tick_slot(tick)
    assert slot is not None
    loop.set_exception_handler(lambda _loop, context: handled.append(context))

    async def scenario() -> None:
        slot.arm(loop.time())
        await until(lambda: len(ticks) >= 3, "ticks after the failing one")
        slot.disarm()

    run(loop, scenario)
    assert len(handled) == 1 and isinstance(handled[0]["exception"], ValueError)
    assert "tick" in handled[0]["message"]


def test_a_failing_tick_is_logged_by_the_default_handler(loop: LeanEventLoop, caplog: pytest.LogCaptureFixture) -> None:
    def tick() -> None:
        raise ValueError("logged")

    slot = loop.claim_tick_slot(tick)
    assert slot is not None

    async def scenario() -> None:
        slot.arm(loop.time())
        await until(lambda: any("logged" in record.getMessage() + str(record.exc_info) for record in caplog.records),
                    "the log line")  # fmt: skip

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run(loop, scenario)


# -- the scheduler on the lean loop ----------------------------------------------


class CountingTestSensor(Sensor):
    description = "test only"
    blocking = False
    measured = 0

    def measure(self) -> float:
        CountingTestSensor.measured += 1
        return 1.0


@pytest.fixture
def counting_sensor() -> Iterator[None]:
    register(CountingTestSensor)
    CountingTestSensor.measured = 0
    yield
    del REGISTRY[CountingTestSensor.__name__]


@pytest.mark.usefixtures("counting_sensor")
@pytest.mark.parametrize("factory", [LeanEventLoop, asyncio.new_event_loop], ids=["lean loop", "asyncio's loop"])
def test_the_scheduler_ticks_through_the_slot_where_the_loop_has_one(
    factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    recorded: list[str] = []
    any_loop = factory()

    async def scenario() -> tuple[bool, int]:
        scheduler = SensorScheduler(AdaptivePlan(), lambda name, value: recorded.append(name))
        scheduler.apply([SensorConfig("CountingTestSensor", 0.05, {})])
        await until(lambda: len(recorded) >= 4, "four ticks")
        ticks_on_the_heap = sum(
            1 for timer in any_loop._scheduled if not timer.cancelled() and timer._callback == scheduler._on_timer
        )
        used_slot = scheduler._slot is not None
        await scheduler.stop()
        scheduler.shutdown()
        return used_slot, ticks_on_the_heap

    try:
        used_slot, ticks_on_the_heap = run(any_loop, scenario)
    finally:
        any_loop.close()
    assert used_slot is isinstance(any_loop, LeanEventLoop)
    assert ticks_on_the_heap == (0 if used_slot else 1)
    assert set(recorded) == {"CountingTestSensor"}


# -- the fallback --------------------------------------------------------------


@pytest.mark.parametrize(
    "sabotage",
    [
        lambda patch: patch.setattr(lean_loop, "MAXIMUM_SELECT_TIMEOUT", None),
        lambda patch: patch.setattr(lean_loop, "_MIN_SCHEDULED_TIMER_HANDLES", "100"),
        lambda patch: patch.setattr(asyncio.BaseEventLoop, "run_forever", lambda self: None),
        lambda patch: patch.setattr(LeanEventLoop, "time", lambda self: time.monotonic()),
    ],
    ids=["a constant gone", "a constant of another type", "run_forever without _run_once", "another clock"],
)
def test_an_asyncio_without_the_expected_private_parts_gives_lagent_the_standard_loop(
    sabotage: Callable[[pytest.MonkeyPatch], None],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sabotage(monkeypatch)
    with pytest.raises(LeanLoopUnsupported):
        LeanEventLoop()
    with caplog.at_level(logging.INFO, logger="fructosa.agent"):
        standard = agent_event_loop()
    try:
        assert not isinstance(standard, LeanEventLoop) and isinstance(standard, asyncio.AbstractEventLoop)
        assert not hasattr(standard, "claim_tick_slot")
    finally:
        standard.close()
    lines = [record for record in caplog.records if "standard event loop" in record.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO


# -- lagent itself ---------------------------------------------------------------

START_AND_TICK = """
import os, signal, sys
from fructosa import cli, programs
from fructosa.agent import lean_loop
ticks = []
tick_on = lean_loop.LeanEventLoop._run_tick
def counted_tick(loop):
    ticks.append(type(loop).__name__)
    tick_on(loop)
    if len(ticks) == 2:
        os.kill(os.getpid(), signal.SIGTERM)  # stop: start() returns
lean_loop.LeanEventLoop._run_tick = counted_tick
status = cli.start(programs.AGENT, sys.argv[1], sys.argv[2], foreground=True)
print("exit", status, "ticks", *ticks)
"""


def test_lagent_runs_its_ticks_on_the_lean_loop(tmp_path: Path) -> None:
    """A real ``lagent start -f`` (its master away: it only ticks and spools), through cli.start."""
    conf = tmp_path / "lagent.conf"
    conf.write_text(agent_ini(tmp_path, 9, sensors={"CPUPercent": {"time_interval": 0.2}}))
    result = subprocess.run(
        [sys.executable, "-c", START_AND_TICK, str(conf), str(tmp_path / "lagent.pid")],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["exit", "0", "ticks", "LeanEventLoop", "LeanEventLoop"], result.stdout
