"""lagent's event loop: asyncio's epoll loop with a leaner turn and one timer slot for the tick.

Why: lagent wakes once a second, runs one tick and sleeps again, so between two ticks the node's jobs
evict its code and data from the CPU's caches, and every line of Python a turn of the loop runs is paid
for cold. Measured cold (caches evicted between turns, thread CPU time, CPython 3.11): one turn of
asyncio's loop running one due timer costs 81–89 µs against 25 µs for the bare ``epoll_wait``; the
tick's re-arm with ``call_at`` ~20 µs more (``TimerHandle.__init__``, and ``heappush``/``heappop`` calling
``TimerHandle.__lt__`` in Python, since the heap also holds the heartbeat timer and the reporter's
cancelled fallback timers). The turn's pieces: ``EpollSelector.select(0)`` 33, ``Handle._run`` of a no-op
23 (a ``Context.run`` and a ``try``), heap push and pop 16, ``_process_events([])`` 7, ``loop.time()`` 7.
An earlier side-by-side measurement of a whole process had an asyncio timer loop at 161–215 µs per tick
against a bare ``selectors`` loop at 124–134.

:class:`LeanEventLoop` keeps asyncio's loop (transports, tasks, futures, signal handlers, executors: all
asyncio's own code) and replaces only its turn, ``_run_once``, with an equivalent that polls the epoll
object itself, reads ``time.monotonic`` directly and builds no list when no file is ready; and it offers a
:class:`TickSlot`: one dedicated "next tick" time and callback, looked at by every turn, with no
``TimerHandle``, no heap and no ``Handle``/context per tick. The sensor scheduler uses the slot when its
loop offers one and ``call_at`` otherwise.

The turn relies on asyncio's private attributes (``_scheduled``, ``_ready``, ``_stopping``, the selector's
epoll object...). :func:`agent_event_loop` checks once that they are there with the expected types (and
that a timer lands in the heap as expected) on the running interpreter; where they are not, lagent runs
on asyncio's standard loop and says so in one line of its log.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import select
import selectors
from asyncio import base_events, events
from collections import deque
from collections.abc import Callable
from time import monotonic

from ..loop_clock import loop_clock

log = logging.getLogger(__package__)

_MIN_SCHEDULED_TIMER_HANDLES = getattr(base_events, "_MIN_SCHEDULED_TIMER_HANDLES", None)
"""Heap size above which asyncio rebuilds the heap once more than this fraction of it is cancelled:"""
_MIN_CANCELLED_TIMER_HANDLES_FRACTION = getattr(base_events, "_MIN_CANCELLED_TIMER_HANDLES_FRACTION", None)
MAXIMUM_SELECT_TIMEOUT = getattr(base_events, "MAXIMUM_SELECT_TIMEOUT", None)
"""asyncio's longest wait for a timer (it guards against a platform's limit on the poll timeout)."""
_EPOLLIN, _EPOLLOUT = getattr(select, "EPOLLIN", 0), getattr(select, "EPOLLOUT", 0)
_EVENT_READ, _EVENT_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_INFINITY = math.inf


class LeanLoopUnsupported(RuntimeError):
    """This interpreter's asyncio lacks a private part the lean turn relies on (the message names it)."""


class TickSlot:
    """The loop's one "next tick": :meth:`arm` for a loop time, :meth:`disarm`; the callback given when the
    slot was claimed runs (once per arming) in the first turn at or after that time, where a timer due then
    would run: after the handles ready before it and the timers due before it, before the timers due after
    it (a timer it cancels then never runs); in the loop's own context (not a copy). What it raises goes to
    the loop's exception handler, as a handle's would, and the slot stays usable."""

    __slots__ = ("_loop",)

    def __init__(self, loop: LeanEventLoop) -> None:
        self._loop = loop

    def arm(self, when: float) -> None:
        """Run the callback at loop time ``when`` (an earlier arming is replaced; ``math.inf`` disarms)."""
        self._loop._tick_when = when

    def disarm(self) -> None:
        self._loop._tick_when = _INFINITY

    def release(self) -> None:
        """Disarm and give the slot back: the loop may hand it to another claimant."""
        self._loop._release_tick_slot(self)


class LeanEventLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop on epoll, with a leaner ``_run_once`` and a :class:`TickSlot`.

    The turn keeps asyncio's semantics: cancelled timers are dropped from the head of the heap, and the
    heap is rebuilt once more than half of it (over 100 timers) is cancelled; the wait is 0 with handles
    ready or the loop stopping, else until the earliest timer or the tick (at most
    ``MAXIMUM_SELECT_TIMEOUT``), and unbounded with neither; timers due within the clock's resolution
    become ready after the handles of the files that are, and the tick takes its place in time order
    among them; the handles ready at the start of the callbacks run in order (those they schedule run in
    the next turn); debug mode times each one as asyncio does. Raises :class:`LeanLoopUnsupported` when
    this asyncio lacks a part the turn uses."""

    def __init__(self) -> None:
        epoll_selector = getattr(selectors, "EpollSelector", None)
        if epoll_selector is None:
            raise LeanLoopUnsupported("no epoll on this platform")
        super().__init__(epoll_selector())
        self._tick_when = _INFINITY
        self._tick_callback: Callable[[], object] | None = None
        self._tick_slot: TickSlot | None = None
        problem = private_parts_problem(self)
        if problem is not None:
            super().close()
            raise LeanLoopUnsupported(problem)
        self._epoll_poll = self._selector._selector.poll  # type: ignore[attr-defined]
        self._fd_to_key: dict = self._selector._fd_to_key  # type: ignore[attr-defined]

    # -- the tick slot -------------------------------------------------------

    def claim_tick_slot(self, callback: Callable[[], object]) -> TickSlot | None:
        """The loop's tick slot, calling ``callback``; None while another claimant holds it."""
        if self._tick_slot is not None:
            return None
        self._tick_callback = callback
        self._tick_when = _INFINITY
        self._tick_slot = TickSlot(self)
        return self._tick_slot

    def _release_tick_slot(self, slot: TickSlot) -> None:
        if slot is self._tick_slot:
            self._tick_slot = self._tick_callback = None
            self._tick_when = _INFINITY

    def close(self) -> None:
        self._tick_when = _INFINITY
        self._tick_callback = None
        super().close()

    # -- one turn ------------------------------------------------------------

    def _run_once(self) -> None:
        """One turn: asyncio's ``BaseEventLoop._run_once`` with the tick slot, in fewer steps."""
        scheduled = self._scheduled
        count = len(scheduled)
        if (
            count > _MIN_SCHEDULED_TIMER_HANDLES
            and self._timer_cancelled_count / count > _MIN_CANCELLED_TIMER_HANDLES_FRACTION
        ):
            scheduled = self._drop_cancelled_timers()
        else:
            while scheduled and scheduled[0]._cancelled:
                self._timer_cancelled_count -= 1
                heapq.heappop(scheduled)._scheduled = False

        ready = self._ready
        if ready or self._stopping:
            timeout = 0.0
        else:
            when = self._tick_when
            if scheduled and scheduled[0]._when < when:
                when = scheduled[0]._when
            if when == _INFINITY:
                timeout = -1.0  # nothing due: wait for a file or a signal
            else:
                # epoll rounds a timeout up to the next millisecond itself (waiting at least this long),
                # as asyncio's EpollSelector.select does before calling it
                timeout = when - monotonic()
                if timeout <= 0.0:
                    timeout = 0.0
                elif timeout > MAXIMUM_SELECT_TIMEOUT:
                    timeout = MAXIMUM_SELECT_TIMEOUT
        fd_to_key = self._fd_to_key
        try:
            fd_events = self._epoll_poll(timeout, len(fd_to_key) or 1)
        except InterruptedError:
            fd_events = None
        if fd_events:
            self._process_events(self._selected(fd_events))
            fd_events = None  # asyncio's: no cycle through a traceback

        end_time = monotonic() + self._clock_resolution
        tick_when = self._tick_when
        after_tick = None
        while scheduled:
            handle = scheduled[0]
            if handle._when >= end_time:
                break
            heapq.heappop(scheduled)
            handle._scheduled = False
            if handle._when > tick_when:  # due after the tick: run after it, in time order as asyncio's heap has them
                if after_tick is None:
                    after_tick = []
                after_tick.append(handle)
            else:
                ready.append(handle)

        count = len(ready)
        if count:
            if self._debug:
                self._run_handles([ready.popleft() for _ in range(count)])
            else:
                popleft = ready.popleft
                for _ in range(count):
                    handle = popleft()
                    if not handle._cancelled:
                        handle._run()
            handle = None  # asyncio's: no cycle through a traceback
        if tick_when < end_time and self._tick_when == tick_when:  # due, and not moved by a handle just run
            self._run_tick()
        if after_tick is not None:
            self._run_handles(after_tick)

    def _selected(self, fd_events: list[tuple[int, int]]) -> list[tuple[selectors.SelectorKey, int]]:
        """``EpollSelector.select``'s translation of epoll's events to (key, mask)."""
        fd_to_key = self._fd_to_key
        selected = []
        for fd, event in fd_events:
            key = fd_to_key.get(fd)
            if key is not None:
                mask = 0
                if event & ~_EPOLLIN:
                    mask |= _EVENT_WRITE
                if event & ~_EPOLLOUT:
                    mask |= _EVENT_READ
                selected.append((key, mask & key.events))
        return selected

    def _run_tick(self) -> None:
        """The tick slot's callback, disarmed first (the callback re-arms it); as ``Handle._run``, what it
        raises goes to the exception handler and the loop goes on."""
        callback = self._tick_callback
        self._tick_when = _INFINITY
        if callback is None:
            return
        try:
            callback()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as error:
            self.call_exception_handler({"message": f"Exception in the tick callback {callback!r}", "exception": error})

    def _drop_cancelled_timers(self) -> list:
        """asyncio's rebuild of a heap that is mostly cancelled timers."""
        kept = []
        for handle in self._scheduled:
            if handle._cancelled:
                handle._scheduled = False
            else:
                kept.append(handle)
        heapq.heapify(kept)
        self._scheduled = kept
        self._timer_cancelled_count = 0
        return kept

    def _run_handles(self, handles: list) -> None:
        """``handles`` in order, those cancelled meanwhile left out; in debug mode each timed as asyncio times
        them. (The ready handles in debug mode, and the timers due after the tick in a turn that runs it.)"""
        for handle in handles:
            if handle._cancelled:
                continue
            if not self._debug:
                handle._run()
                continue
            try:
                self._current_handle = handle
                started = self.time()
                handle._run()
                took = self.time() - started
                if took >= self.slow_callback_duration:
                    base_events.logger.warning("Executing %s took %.3f seconds", handle, took)
            finally:
                self._current_handle = None


def private_parts_problem(loop: asyncio.AbstractEventLoop) -> str | None:
    """What of asyncio's private parts :meth:`LeanEventLoop._run_once` relies on this interpreter's
    ``loop`` lacks or has in another form, or None when all are as expected."""
    run_forever = getattr(asyncio.BaseEventLoop.run_forever, "__code__", None)
    if run_forever is None or "_run_once" not in run_forever.co_names:
        return "BaseEventLoop.run_forever does not call _run_once"
    for name, value, kind in (
        ("base_events._MIN_SCHEDULED_TIMER_HANDLES", _MIN_SCHEDULED_TIMER_HANDLES, int),
        ("base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION", _MIN_CANCELLED_TIMER_HANDLES_FRACTION, float),
        ("base_events.MAXIMUM_SELECT_TIMEOUT", MAXIMUM_SELECT_TIMEOUT, (int, float)),
        ("loop._scheduled", getattr(loop, "_scheduled", None), list),
        ("loop._ready", getattr(loop, "_ready", None), deque),
        ("loop._stopping", getattr(loop, "_stopping", None), bool),
        ("loop._debug", getattr(loop, "_debug", None), bool),
        ("loop._timer_cancelled_count", getattr(loop, "_timer_cancelled_count", None), int),
        ("loop._clock_resolution", getattr(loop, "_clock_resolution", None), float),
        ("loop._selector", getattr(loop, "_selector", None), getattr(selectors, "EpollSelector", ())),
        (
            "loop._selector._selector",
            getattr(getattr(loop, "_selector", None), "_selector", None),
            getattr(select, "epoll", ()),
        ),
        ("loop._selector._fd_to_key", getattr(getattr(loop, "_selector", None), "_fd_to_key", None), dict),
    ):
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            return f"{name} is {type(value).__name__}, not as expected"
    if not callable(getattr(loop, "_process_events", None)):
        return "loop._process_events is missing"
    if loop_clock(loop) is not monotonic:
        return "the loop's time() is not asyncio's (time.monotonic)"
    handle_slots = set(getattr(events.TimerHandle, "__slots__", ())) | set(getattr(events.Handle, "__slots__", ()))
    missing = {"_when", "_scheduled", "_cancelled", "_run"} - handle_slots - set(dir(events.TimerHandle))
    if missing:
        return f"TimerHandle lacks {', '.join(sorted(missing))}"
    # A timer as the turn expects it: on the heap, due at its time, counted once cancelled.
    timer = loop.call_at(0.0, lambda: None)
    try:
        as_expected = loop._scheduled == [timer] and timer._when == 0.0 and timer._scheduled is True  # type: ignore[attr-defined]
        timer.cancel()
        as_expected = as_expected and timer._cancelled is True and loop._timer_cancelled_count == 1  # type: ignore[attr-defined]
    finally:
        timer.cancel()
        loop._scheduled.clear()  # type: ignore[attr-defined]
        loop._timer_cancelled_count = 0  # type: ignore[attr-defined]
    if not as_expected:
        return "a timer does not land on loop._scheduled as expected"
    return None


def agent_event_loop() -> asyncio.AbstractEventLoop:
    """lagent's loop (``asyncio.Runner``'s ``loop_factory``): a :class:`LeanEventLoop` where this
    interpreter's asyncio has the parts it relies on, else asyncio's standard loop."""
    try:
        return LeanEventLoop()
    except LeanLoopUnsupported as reason:
        log.info("lagent runs on asyncio's standard event loop (its lean loop does not fit this Python: %s)", reason)
        return asyncio.new_event_loop()
